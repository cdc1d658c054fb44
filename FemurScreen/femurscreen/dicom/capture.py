"""The screening report as a DICOM Secondary Capture image, filed in the CT's study.

Why a Secondary Capture and not an encapsulated PDF: a PDF of the HTML report needs a browser
engine (Chromium) that is not part of our dependencies, while every PACS viewer shows an SC
image. The page is drawn with matplotlib (Agg, no display): the DEMO banner first whenever a
demo model produced the numbers, then one block per side (status, predicted class,
probabilities, volume, density, CT-derived aBMD/T-score, flags) and, when the CT is given, the
report's own pictures through each femur (``femurscreen.output.report.render_pictures``).

Like the HTML report it names no patient: the case label only. The DICOM header carries the
source's patient and study modules (PACS files it by them); the pixels do not, so Burned In
Annotation is NO.
"""

from __future__ import annotations

import base64
import io

import highdicom as hd
import numpy as np
import SimpleITK as sitk
from pydicom.dataset import Dataset
from pydicom.uid import RLELossless

from femurscreen import __version__
from femurscreen.labels import CLASSES
from femurscreen.status import Status

SERIES_NUMBER = 9703
PAGE_IN = (8.27, 11.69)  # A4 portrait
DPI = 110
SIDE_ORDER = ("right", "left")  # radiological order, as in the HTML report
BANNER = "DEMO MODEL - trained on synthetic data - not for clinical use"


def _fmt(value, digits: int = 1, unit: str = "") -> str:
    if value is None:
        return "n/a"
    try:
        return f"{float(value):.{digits}f}{unit}"
    except (TypeError, ValueError):
        return str(value)


def side_lines(side: str, info: dict, bmd_side: dict) -> list[str]:
    """The text block of one side, as the page shows it."""
    status = str(info.get("status") or "not_found")
    lines = [f"{side.upper()} proximal femur: {status}"]
    if info.get("graded"):
        probs = info.get("probabilities") or {}
        lines.append(f"Predicted: {info.get('predicted')}")
        lines.append(
            "Probabilities: "
            + ", ".join(f"{c} {_fmt(100 * probs[c], 0, '%')}" for c in CLASSES if c in probs)
        )
        if info.get("applicable") is False:
            lines.append("Outside the training data: probabilities unreliable")
    elif info.get("reason"):
        lines.append(f"Not graded: {info['reason']}")
    lines.append(f"Volume: {_fmt(info.get('volume_ml'), 1, ' ml')}")
    density = info.get("density") or {}
    if density:
        lines.append(
            "Mean HU: "
            + ", ".join(
                f"{roi} {_fmt(density.get(f'{roi}_mean_hu'), 0)}"
                for roi in ("head", "neck", "intertroch")
                if density.get(f"{roi}_mean_hu") is not None
            )
        )
    if bmd_side.get("status") == Status.OK:
        lines.append(
            f"CT-derived aBMD neck {_fmt(bmd_side.get('fn_abmd_g_cm2'), 3)} g/cm2, "
            f"T-score neck {_fmt(bmd_side.get('fn_t_score'), 1)}, "
            f"total hip {_fmt(bmd_side.get('th_t_score'), 1)}; WHO {bmd_side.get('who_class')}"
        )
    flags = info.get("flags") or []
    if flags:
        from femurscreen.grading import flag_help

        lines.append("Flags: " + "; ".join(flag_help(f) for f in flags))
    return lines


def render_page(result: dict, pictures: dict[str, str] | None = None) -> np.ndarray:
    """The report page as an RGB uint8 array (rows, columns, 3)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=PAGE_IN, dpi=DPI, facecolor="white")
    canvas = FigureCanvasAgg(fig)
    top = 0.97
    if result.get("demo"):
        fig.patches.append(_rectangle(fig, (0.03, top - 0.055), 0.94, 0.055, color="#c0392b"))
        fig.text(
            0.5,
            top - 0.0275,
            BANNER,
            ha="center",
            va="center",
            color="white",
            fontsize=13,
            fontweight="bold",
        )
        top -= 0.075
    fig.text(
        0.04,
        top,
        "FemurScreen: opportunistic osteoporosis screening",
        fontsize=14,
        fontweight="bold",
        va="top",
    )
    top -= 0.03
    fig.text(
        0.04,
        top,
        f"Case {result.get('case', '')}  (no patient identifiers shown)",
        fontsize=10,
        va="top",
    )
    top -= 0.03
    bmd = result.get("bmd") or {}
    pictures = pictures or {}
    for side in SIDE_ORDER:
        info = result.get(side) or {}
        lines = side_lines(side, info, bmd.get(side) or {})
        fig.text(0.04, top, lines[0], fontsize=11, fontweight="bold", va="top")
        fig.text(
            0.04,
            top - 0.022,
            "\n".join(_wrap(line) for line in lines[1:]),
            fontsize=8.5,
            va="top",
            linespacing=1.4,
        )
        block = 0.022 + 0.0155 * sum(_wrap(line).count("\n") + 1 for line in lines[1:])
        if side in pictures:
            image = _decode(pictures[side])
            width = 0.46  # figure fractions; the picture keeps its aspect
            height = min(0.26, width * image.shape[0] / image.shape[1] * PAGE_IN[0] / PAGE_IN[1])
            width = height * image.shape[1] / image.shape[0] * PAGE_IN[1] / PAGE_IN[0]
            ax = fig.add_axes((0.5, top - height, width, height))
            ax.imshow(image)
            ax.set_axis_off()
            block = max(block, height + 0.01)
        top -= block + 0.025
    if "overview" in pictures and top > 0.3:  # both femurs at a glance (left/right check)
        image = _decode(pictures["overview"])
        height = min(top - 0.12, 0.92 * image.shape[0] / image.shape[1] * PAGE_IN[0] / PAGE_IN[1])
        width = height * image.shape[1] / image.shape[0] * PAGE_IN[1] / PAGE_IN[0]
        fig.text(0.04, top, "Both femurs", fontsize=11, fontweight="bold", va="top")
        ax = fig.add_axes((0.04, top - 0.025 - height, width, height))
        ax.imshow(image)
        ax.set_axis_off()
        top -= height + 0.045
    if bmd.get("label"):
        fig.text(
            0.04,
            max(top, 0.06),
            _wrap(f"Density: {bmd['label']}", 110),
            fontsize=7.5,
            va="top",
            color="#444444",
        )
    notice = result.get("demo_notice")
    footer = f"femurscreen {result.get('version', __version__)}"
    if notice:
        footer = f"{notice}   |   {footer}"
    fig.text(0.5, 0.02, footer, ha="center", fontsize=7.5, color="#444444")
    canvas.draw()
    rgba = np.asarray(canvas.buffer_rgba())
    return np.ascontiguousarray(rgba[:, :, :3])


def _rectangle(fig, xy, width, height, color):
    from matplotlib.patches import Rectangle

    return Rectangle(
        xy, width, height, transform=fig.transFigure, facecolor=color, edgecolor="none", figure=fig
    )


def _wrap(text: str, width: int = 62) -> str:
    import textwrap

    return "\n".join(textwrap.wrap(text, width)) or text


def _decode(png_base64: str) -> np.ndarray:
    from matplotlib.image import imread

    return imread(io.BytesIO(base64.b64decode(png_base64)), format="png")


def build_capture(
    result: dict,
    reference: Dataset,
    *,
    ct: sitk.Image | None = None,
    labels: sitk.Image | None = None,
    series_instance_uid: str | None = None,
) -> hd.sc.SCImage:
    """A Secondary Capture of the report page, patient and study copied from ``reference``
    (a source CT slice or the SEG); with ``ct`` and ``labels`` the femur pictures are drawn."""
    pictures = None
    if ct is not None and labels is not None:
        from femurscreen.output.report import render_pictures

        pictures = render_pictures(ct, labels, result)
    page = render_page(result, pictures)
    capture = hd.sc.SCImage.from_ref_dataset(
        ref_dataset=reference,
        pixel_array=page,
        photometric_interpretation=hd.PhotometricInterpretationValues.RGB,
        bits_allocated=8,
        coordinate_system=hd.CoordinateSystemNames.PATIENT,
        patient_orientation=("L", "F"),  # required by highdicom; emptied below (a page)
        series_instance_uid=series_instance_uid or hd.UID(),
        series_number=SERIES_NUMBER,
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer="FemurScreen",
        series_description="FemurScreen report (screen capture)",
        transfer_syntax_uid=RLELossless,  # lossless, about 6x smaller than raw RGB
    )
    # Type 2 elements present but empty: a report page has no orientation, and it shows both
    # hips, so no one laterality (pydicom writes None as an empty value).
    capture["PatientOrientation"].value = None
    capture.add_new("Laterality", "CS", None)
    capture.BurnedInAnnotation = "NO"
    capture.ImageComments = (BANNER + ". " if result.get("demo") else "") + (
        f"FemurScreen report, case {result.get('case', '')}"
    )
    return capture


__all__ = ["build_capture", "render_page", "side_lines"]
