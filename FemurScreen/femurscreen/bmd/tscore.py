"""T-scores and WHO class from CT-derived hip aBMD, with the uncertainty that goes with them.

Why: the number a clinician knows is the DXA T-score of the hip; a CT-derived estimate must be
put on the same scale and say how uncertain it is.

Reference: NHANES III, non-Hispanic white women aged 20-29 (Looker et al., Updated data on
proximal femur bone mineral levels of US adults, Osteoporos Int 1998;8:468-489; the ISCD
reference for hip T-scores; Kanis et al., Bone 2008;42:467): femoral neck 0.858 +- 0.120
g/cm^2, total hip 0.942 +- 0.122 g/cm^2 (Hologic).
WHO: T >= -1 normal, -2.5 < T < -1 osteopenia, T <= -2.5 osteoporosis, from the lower of the
femoral-neck and total-hip T-scores (as ISCD reads a hip DXA).
Uncertainty: CTXA Hip (Cann et al., PLoS One 2014;9:e91904) agrees with DXA to a standard
error of estimate of 0.044 g/cm^2, i.e. about 0.37 T units (1 SD), plus the calibration's own
SD (its effective energy's uncertainty: about 3 % with a kVp, 11 % without); our phantomless
calibration and projection are not validated against DXA at all, so that is a lower bound.
"""

from __future__ import annotations

import numpy as np

from femurscreen.labels import bone_status

REFERENCE = {
    "fn": {"mean": 0.858, "sd": 0.120},
    "th": {"mean": 0.942, "sd": 0.122},
}
REFERENCE_SOURCE = "NHANES III white women 20-29 (Looker et al., Osteoporos Int 1998;8:468)"
SEE_G_CM2 = 0.044  # CTXA vs DXA (Cann et al. 2014)
LABEL = "CT-derived estimate (not a DXA measurement; phantomless calibration, not validated)"
LABEL_SITE = "CT-derived estimate (not a DXA measurement; site phantom calibration, not validated)"


def t_score(abmd_g_cm2: float | None, site: str) -> float | None:
    if abmd_g_cm2 is None:
        return None
    ref = REFERENCE[site]
    return (abmd_g_cm2 - ref["mean"]) / ref["sd"]


def grade(
    fn_abmd: float | None, th_abmd: float | None, calibration_sd_percent: float = 0.0
) -> dict:
    """T-scores, WHO class and uncertainty for one side (numbers None when not measured).
    ``calibration_sd_percent``: the calibration's own SD of the mineral density (from its
    energy's SD), added in quadrature to the CTXA error (about 11 % without a kVp)."""
    fn_t = t_score(fn_abmd, "fn")
    th_t = t_score(th_abmd, "th")
    ts = [t for t in (fn_t, th_t) if t is not None]
    lowest = min(ts) if ts else None
    flags = []
    see_t = SEE_G_CM2 / REFERENCE["fn"]["sd"]
    cal_t = (fn_abmd or 0.0) * calibration_sd_percent / 100.0 / REFERENCE["fn"]["sd"]
    t_sd = float(np.hypot(see_t, cal_t))
    if lowest is not None and min(abs(lowest + 1.0), abs(lowest + 2.5)) < t_sd:
        flags.append("class_uncertain")
    return {
        "fn_t_score": None if fn_t is None else round(fn_t, 2),
        "th_t_score": None if th_t is None else round(th_t, 2),
        "who_class": None if lowest is None else bone_status(lowest),
        "t_score_sd": round(t_sd, 2),
        "flags": flags,
    }
