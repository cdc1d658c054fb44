"""Tabulated X-ray attenuation of the reference tissues and of the mineral, for the
effective-energy calibration (:mod:`femurscreen.bmd.calibration`).

Why: a CT number is a linear attenuation coefficient relative to water at the scan's effective
energy; bone mineral attenuates far more steeply with energy than soft tissue, so the same bone
reads higher at 100 kVp than at 140 kVp. Knowing how each tissue attenuates at each energy
lets the scan's own tissues tell its energy (Michalski et al., Med Eng Phys 2020;78:55-63,
implemented in Bonelab/Ogo as "internal calibration"), and the mineral's attenuation at that
energy turns bone HU into mineral density.

Source: mass attenuation coefficients with coherent scattering, cm^2/g, from NIST (Hubbell &
Seltzer, X-Ray Mass Attenuation Coefficients, NIST Standard Reference Database 126, Table 4:
water (liquid), air (dry, sea level), adipose tissue and skeletal muscle (ICRU-44)); K2HPO4
and hydroxyapatite from NIST XCOM (Berger et al.) for the chemical formulas. Only the
30-150 keV rows are kept (CT effective energies are 45-85 keV); values between rows are
interpolated log-log, as the tables' authors advise.
"""

from __future__ import annotations

import numpy as np

ENERGY_KEV = np.array([30.0, 40.0, 50.0, 60.0, 80.0, 100.0, 150.0])
MASS_ATTENUATION_CM2_G: dict[str, np.ndarray] = {
    "water": np.array([0.3756, 0.2683, 0.2269, 0.2059, 0.1837, 0.1707, 0.1505]),
    "air": np.array([0.3538, 0.2485, 0.2080, 0.1875, 0.1662, 0.1541, 0.1356]),
    "adipose": np.array([0.3063, 0.2396, 0.2123, 0.1974, 0.1800, 0.1688, 0.1500]),
    "muscle": np.array([0.3783, 0.2685, 0.2262, 0.2048, 0.1823, 0.1693, 0.1492]),
    "k2hpo4": np.array([1.975, 0.9327, 0.5573, 0.3890, 0.2508, 0.1972, 0.1480]),
    "hydroxyapatite": np.array([2.099, 0.9877, 0.5867, 0.4067, 0.2589, 0.2019, 0.1501]),
}
# densities (g/cm^3) of the reference tissues as the calibration assumes them: ICRU-44
# skeletal muscle (1.05); subcutaneous adipose tissue at 0.93 (ICRU-44 composition; ICRU's
# 0.95 reads about -90 HU at 120 kVp, while fat in 120 kVp CT reads -100 +- 10 HU); dry air
DENSITY_G_CM3 = {"water": 1.0, "air": 0.0012, "adipose": 0.93, "muscle": 1.05}
# water a dissolved mineral displaces, cm^3 per g (K2HPO4 in solution; with it a K2HPO4
# phantom reads 1.25 HU per mg/cm^3 at 66 keV, i.e. 0.80 mg/cm^3 per HU, the slope of a
# Mindways calibration at 120 kVp)
DISPLACED_WATER_CM3_G = 0.45
# nominal effective energy of a filtered beam after an adult pelvis (keV): what a kVp header
# alone says about the energy; the fit refines it from the tissues
NOMINAL_KEV = {80.0: 52.0, 100.0: 59.0, 120.0: 66.0, 140.0: 72.0}
REFERENCE_KVP = 120.0


def mass_attenuation(material: str, energy_kev: float | np.ndarray) -> np.ndarray:
    """mu/rho (cm^2/g) of a tabulated material at the energies given (log-log interpolation)."""
    table = MASS_ATTENUATION_CM2_G[material]
    e = np.log(np.asarray(energy_kev, dtype=np.float64))
    return np.exp(np.interp(e, np.log(ENERGY_KEV), np.log(table)))


def tissue_hu(material: str, energy_kev: float | np.ndarray) -> np.ndarray:
    """HU a water-calibrated scanner reads for a reference tissue at an effective energy."""
    mu = DENSITY_G_CM3[material] * mass_attenuation(material, energy_kev)
    return 1000.0 * (mu / mass_attenuation("water", energy_kev) - 1.0)


def mineral_hu_per_mg_cm3(energy_kev: float | np.ndarray, material: str = "k2hpo4") -> np.ndarray:
    """HU added by 1 mg/cm^3 of dissolved mineral at an effective energy (water displaced)."""
    ratio = mass_attenuation(material, energy_kev) / mass_attenuation("water", energy_kev)
    return ratio - DISPLACED_WATER_CM3_G


def nominal_energy_kev(kvp: float) -> float:
    """Effective energy (keV) a kVp setting gives on average (:data:`NOMINAL_KEV`)."""
    k = sorted(NOMINAL_KEV)
    return float(np.interp(kvp, k, [NOMINAL_KEV[v] for v in k]))


REFERENCE_KEV = nominal_energy_kev(REFERENCE_KVP)
