"""The screening report: one self-contained HTML file a radiologist can open, print or archive.

Why HTML: it opens anywhere without software, prints well, and with the pictures embedded as
base64 PNG it stays one file that can be attached to a ticket or PACS note.

Layout, from what a reader needs first to what they need last:

1. a red banner when a demo model produced the numbers (never smaller than the result itself);
2. the case label (an image fingerprint unless identifiers were asked for) and a one-line
   summary per side;
3. one card per side, patient's RIGHT on the left of the page, matching the radiological
   orientation of the pictures: status, probability bars for the three classes, the predicted
   class, trabecular HU readouts, flags in plain words, the segmentation check (do two engines
   agree on this mask?), axial and coronal pictures through the femur with the segmentation
   outlined in the side's colour;
4. the calibrated density (``femurscreen.bmd``): per side femoral-neck and total-hip aBMD,
   T-scores and WHO class with their uncertainty, the DXA-like projection with the neck box and
   the total-hip region and the calibration line; labelled a CT-derived estimate, not a DXA;
   when the scan's calibration is refused, the reason instead of numbers;
5. an overview of both femurs (to check left/right at a glance);
6. technical details: models (sha256 prefixes, demo flags), input geometry, timing.

Flag words come from the one flag table (``grading.flag_help``); statuses are compared as
:class:`femurscreen.status.Status`.
"""

from __future__ import annotations

import base64
import html
import io
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk

from femurscreen.atomic import write_text
from femurscreen.grading import flag_help, quality_words
from femurscreen.labels import CLASSES, SIDE_COLORS, SIDES
from femurscreen.status import Status

DEMO_BANNER = "DEMO MODEL — trained on synthetic data — not for clinical use"
CLASS_COLORS = {"normal": "#2e8b57", "osteopenia": "#d08c00", "osteoporosis": "#c0392b"}
CLASS_WORDS = {"normal": "Normal", "osteopenia": "Osteopenia", "osteoporosis": "Osteoporosis"}
BMD_TITLE = "Calibrated density (CT-derived estimate, not DXA)"
ROI_WORDS = {
    "head": "Femoral head",
    "neck": "Femoral neck",
    "intertroch": "Intertrochanteric",
    "whole": "Whole ROI, cortex included",
}
SIDE_ORDER = ("right", "left")  # radiological: patient's right on the left of the page
CROP_MARGIN_MM = 25.0
NECK_FRACTION = 0.5  # neck level: this far from the head top towards the lesser trochanter


def demo_banner_for(stream) -> str:
    """The demo banner for a terminal; plain hyphens where the stream cannot encode dashes."""
    text = f"*** {DEMO_BANNER} ***"
    try:
        text.encode(getattr(stream, "encoding", None) or "utf-8")
    except (UnicodeEncodeError, LookupError):
        text = text.replace("—", "-")
    return text


def write_report(
    result: dict,
    ct: sitk.Image,
    labels: sitk.Image,
    path: str | Path,
    *,
    bmd_projections: Mapping[str, Any] | None = None,
) -> Path:
    """Render ``result`` (from :func:`femurscreen.screening.screen`) to a self-contained HTML.
    ``bmd_projections``: the grading's density projections (``Grading.bmd_projections``), so the
    density picture is drawn without measuring again."""
    pictures = render_pictures(ct, labels, result)
    density = density_picture(ct, labels, result, bmd_projections)
    if density:
        pictures["bmd"] = density
    return write_text(path, render_html(result, pictures))


# --------------------------------------------------------------------------------------------
# Pictures


def render_pictures(ct: sitk.Image, labels: sitk.Image, result: dict) -> dict[str, str]:
    """Base64 PNGs: one per side with a femur in the label map, and an overview of both.

    Each side's pictures are cut from a crop of the CT around that femur (plus
    ``CROP_MARGIN_MM``), so reorienting and slicing touch a small image, not the whole CT.
    """
    from femurscreen.output.render import centre_index, slices_through, to_lps

    array = sitk.GetArrayViewFromImage(labels)  # original voxel order (z, y, x)
    pictures: dict[str, str] = {}
    centroids = []
    for side, value in SIDES.items():
        box = _bbox(array == value)
        if box is None:
            continue
        lo, hi = _pad(box, ct)
        crop_ct = ct[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]]
        crop_labels = labels[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]]
        grid = to_lps(crop_labels)
        crop_lps = sitk.GetArrayFromImage(grid)
        centre = centre_index(crop_lps, crop_lps.shape, value)
        neck = _neck_centre(grid, crop_lps == value, result.get(side) or {})
        axial, coronal = slices_through(crop_ct, crop_labels, centre=neck or centre)
        pictures[side] = _png(
            [(axial, "Axial, neck level" if neck else "Axial"), (coronal, "Coronal")],
            width_in=5.6,
            outline=True,
        )
        kji = np.argwhere(sitk.GetArrayViewFromImage(crop_labels) == value).mean(axis=0)
        centroids.append(crop_labels.TransformContinuousIndexToPhysicalPoint(kji[::-1].tolist()))
    if centroids:
        middle = np.mean(centroids, axis=0)
        grid = to_lps(labels)
        index = grid.TransformPhysicalPointToIndex(tuple(float(v) for v in middle))
        k, j, i = (int(v) for v in index[::-1])
        axial, coronal = slices_through(ct, labels, centre=(k, j, i))
        pictures["overview"] = _png([(axial, "Axial"), (coronal, "Coronal")], width_in=9.0)
    return pictures


def density_picture(
    ct: sitk.Image,
    labels: sitk.Image,
    result: dict,
    projections: Mapping[str, Any] | None = None,
) -> str | None:
    """The density read as a base64 PNG (``bmd.figure``: calibration line, each side's
    projection with the neck box and total-hip region); None when ``result`` has no bmd block.

    The projections are images, not JSON: the grading's are used when given; otherwise (a
    result read back from JSON) they are measured again with the statuses the grading used (the
    same deterministic call, so the same numbers as ``result["bmd"]``).
    """
    if not result.get("bmd"):
        return None
    from femurscreen.bmd.figure import save_figure

    if projections is not None:
        block, images = result["bmd"], dict(projections)
    else:
        from femurscreen.bmd import measure

        side_status = {}
        for side in SIDES:
            status = (result.get(side) or {}).get("status") or Status.NOT_FOUND
            # "error" comes from features/classification after a side was segmented "ok"
            side_status[side] = Status.OK if status == Status.ERROR else str(status)
        block = measure(ct, labels, side_status=side_status, keep_images=True)
        images = block.pop("_projections", {})
    with tempfile.TemporaryDirectory(prefix="femurscreen-bmd-") as folder:
        png = save_figure(block, images, Path(folder) / "bmd.png")
        return base64.b64encode(png.read_bytes()).decode("ascii")


def _neck_centre(grid: sitk.Image, mask: np.ndarray, info: dict) -> tuple[int, int, int] | None:
    """(z, y, x) in the LPS-oriented crop at the femoral neck's level, from the landmarks.

    The neck's middle lies about half way from the top of the head down to the lesser
    trochanter (adult proportions); the in-plane centre is the mask's centroid on that slice.
    """
    marks = info.get("landmarks_z_mm") or {}
    top, lesser = marks.get("head_top"), marks.get("lesser_trochanter")
    if top is None or lesser is None or top <= lesser:
        return None
    z_world = top - NECK_FRACTION * (top - lesser)
    origin_z = grid.GetOrigin()[2]
    z = int(round((z_world - origin_z) / grid.GetSpacing()[2]))
    if not 0 <= z < mask.shape[0] or not mask[z].any():
        return None
    y, x = (int(round(c)) for c in np.argwhere(mask[z]).mean(axis=0))
    return z, y, x


def _bbox(mask: np.ndarray) -> tuple[list[int], list[int]] | None:
    """Inclusive (x, y, z) index bounds of a (z, y, x) mask, from its projections."""
    if not mask.any():
        return None
    lo, hi = [], []
    for axis in (2, 1, 0):
        other = tuple(a for a in range(3) if a != axis)
        idx = np.flatnonzero(mask.any(axis=other))
        lo.append(int(idx[0]))
        hi.append(int(idx[-1]))
    return lo, hi


def _pad(box: tuple[list[int], list[int]], image: sitk.Image) -> tuple[list[int], list[int]]:
    """Widen an index box by CROP_MARGIN_MM; returns half-open (start, stop) per axis."""
    lo, hi = box
    size, spacing = image.GetSize(), image.GetSpacing()
    pad = [int(round(CROP_MARGIN_MM / s)) for s in spacing]
    start = [max(a - p, 0) for a, p in zip(lo, pad, strict=True)]
    stop = [min(b + p + 1, n) for b, p, n in zip(hi, pad, size, strict=True)]
    return start, stop


def _png(panels, *, width_in: float, outline: bool = False) -> str:
    """Draw the panels side by side at one height (Agg, no pyplot state); base64 PNG text.

    The figure's height follows the panels' true aspect, so no black bands are wasted.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from femurscreen.output.render import Slice, draw

    gap = 0.012  # fraction of the figure width between panels
    heights = [p.ct.shape[0] * p.aspect for p, _ in panels]
    widths = [p.ct.shape[1] * max(heights) / h for (p, _), h in zip(panels, heights, strict=True)]
    usable = 1.0 - gap * (len(panels) - 1)
    height_in = width_in * usable * max(heights) / sum(widths)
    fig = Figure(figsize=(width_in, height_in), facecolor="black")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(panels), gridspec_kw={"width_ratios": widths})
    fig.subplots_adjust(left=0, right=1, bottom=0, top=1, wspace=gap * len(panels))
    for ax, (picture, title) in zip(np.atleast_1d(axes), panels, strict=True):
        draw(ax, Slice(picture.ct, None if outline else picture.labels, picture.aspect, ""))
        if outline and picture.labels is not None:
            _outline(ax, picture.labels)
        ax.set_title("")
        ax.set_aspect(picture.aspect)
        ax.set_facecolor("black")
        for spine in ax.spines.values():
            spine.set_visible(False)
        ax.text(0.02, 0.98, title, color="white", fontsize=8.5, va="top", transform=ax.transAxes)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=120, facecolor="black")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _outline(ax, labels: np.ndarray) -> None:
    """Segment borders only, so the bone under the mask stays visible."""
    for side, value in SIDES.items():
        mask = labels == value
        if mask.any():
            ax.contour(mask.astype(float), levels=[0.5], colors=[SIDE_COLORS[side]], linewidths=1.1)


# --------------------------------------------------------------------------------------------
# HTML


def _e(value) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def _rgb(side: str) -> str:
    r, g, b = (int(round(255 * c)) for c in SIDE_COLORS[side])
    return f"rgb({r},{g},{b})"


def flag_sentences(side: str, info: dict) -> list[str]:
    """Plain-words explanations of a side's status and flags."""
    status = info.get("status")
    sentences = []
    if status == Status.IMPLANT:
        sentences.append(
            f"Metal implant in the {side} femur: this side was not graded (metal and its "
            "artefacts replace bone texture and density)."
        )
    elif status == Status.TRUNCATED:
        sentences.append(
            f"The {side} proximal femur is cut by the edge of the scan: this side was not "
            "graded (the measured region would not match the model's)."
        )
    elif status == Status.NOT_FOUND:
        sentences.append(f"No {side} proximal femur was found in the scan.")
    elif status == Status.ERROR:
        sentences.append(f"The {side} femur could not be graded: {info.get('reason') or ''}")
    if info.get("graded") and info.get("applicable") is False:
        sentences.append(
            "This femur's features lie outside the range of the model's training data: "
            "treat the probabilities as unreliable."
        )
    # the status sentences above already say what these flags mean
    known = {"implant", "truncated", "feature_error", "classification_error"}
    known.add("outside_training_distribution")
    known.add("review_segmentation")  # the card's segmentation-check line says it, with the number
    for flag in info.get("flags") or []:
        if flag not in known:
            sentences.append(f"{side.capitalize()} femur: {flag_help(flag)}.")
    return sentences


def _summary_line(side: str, info: dict) -> str:
    if info.get("graded"):
        cls = info.get("predicted") or ""
        p = (info.get("probabilities") or {}).get(cls)
        pct = f" ({100 * p:.0f}%)" if p is not None else ""
        return f"{CLASS_WORDS.get(cls, cls)}{pct}"
    status = str(info.get("status") or "not graded")
    words: dict[str, str] = {
        Status.IMPLANT: "not graded — metal implant",
        Status.TRUNCATED: "not graded — cut by the scan edge",
        Status.NOT_FOUND: "not found in the scan",
    }
    return words.get(status, "not graded")


def _bars(info: dict) -> str:
    probabilities = info.get("probabilities") or {}
    predicted = info.get("predicted")
    rows = []
    for cls in CLASSES:
        p = probabilities.get(cls)
        width = 0.0 if p is None else max(0.0, min(1.0, float(p))) * 100
        label = "–" if p is None else f"{100 * p:.0f}%"
        mark = " predicted" if cls == predicted else ""
        rows.append(
            f'<div class="bar-row{mark}"><span class="bar-label">{_e(CLASS_WORDS[cls])}</span>'
            f'<span class="bar-track"><span class="bar-fill" style="width:{width:.1f}%;'
            f'background:{CLASS_COLORS[cls]}"></span></span>'
            f'<span class="bar-value">{_e(label)}</span></div>'
        )
    return '<div class="bars">' + "".join(rows) + "</div>"


def _density_table(density: dict) -> str:
    if not density:
        return ""
    rois: dict[str, dict[str, float]] = {}
    for key, value in density.items():
        for stat in ("mean_hu", "sd_hu", "ml"):
            if key.endswith("_" + stat):
                rois.setdefault(key[: -len(stat) - 1], {})[stat] = value
                break
    if not rois:
        return ""
    rows = []
    for roi, stats in rois.items():
        mean, sd, ml = stats.get("mean_hu"), stats.get("sd_hu"), stats.get("ml")
        hu = "–" if mean is None else f"{mean:.0f}" + ("" if sd is None else f" ± {sd:.0f}")
        vol = "–" if ml is None else f"{ml:.1f}"
        rows.append(
            f"<tr><td>{_e(ROI_WORDS.get(roi, roi))}</td><td class='num'>{_e(hu)}</td>"
            f"<td class='num'>{_e(vol)}</td></tr>"
        )
    return (
        '<table class="density"><thead><tr><th>Region</th>'
        "<th class='num'>HU (mean ± SD)</th><th class='num'>ml</th></tr></thead><tbody>"
        + "".join(rows)
        + "</tbody></table>"
    )


def _side_card(side: str, info: dict, picture: str | None, bmd_line: str = "") -> str:
    graded = bool(info.get("graded"))
    badge_class = "ok" if graded else "muted"
    badge = "graded" if graded else _e((info.get("status") or "not graded").replace("_", " "))
    parts = [
        f'<section class="card"><h2><span class="swatch" style="background:{_rgb(side)}">'
        f"</span>{_e(side.capitalize())} proximal femur "
        f'<span class="badge {badge_class}">{badge}</span></h2>'
    ]
    if graded:
        cls = info.get("predicted") or ""
        parts.append(
            f'<p class="predicted">Most likely: <strong style="color:'
            f'{CLASS_COLORS.get(cls, "#222")}">{_e(CLASS_WORDS.get(cls, cls))}</strong></p>'
        )
        parts.append(_bars(info))
    sentences = flag_sentences(side, info)
    if sentences:
        parts.append(
            '<ul class="flags">' + "".join(f"<li>{_e(s)}</li>" for s in sentences) + "</ul>"
        )
    parts.append(_quality_line(info))
    facts = []
    if info.get("volume_ml") is not None:
        facts.append(f"Segmented volume {info['volume_ml']:.1f} ml")
    if facts:
        parts.append('<p class="facts">' + _e(" · ".join(facts)) + "</p>")
    parts.append(_density_table(info.get("density") or {}))
    parts.append(bmd_line)
    if picture:
        parts.append(
            f'<img class="slices" alt="Axial and coronal slices through the {side} femur" '
            f'src="data:image/png;base64,{picture}">'
        )
    parts.append("</section>")
    return "".join(parts)


def _quality_line(info: dict) -> str:
    """The side's segmentation check in plain words (``grading.quality_words``); a warning when
    the engines disagree (``review_segmentation``), a quiet line otherwise."""
    words = quality_words(info)
    if not words:
        return ""
    low = "review_segmentation" in (info.get("flags") or [])
    css = "quality low" if low else "quality"
    return f'<p class="{css}"><strong>Segmentation check:</strong> {_e(words)}.</p>'


def _fmt(value, digits: int) -> str:
    """A number for the page ("–" when absent; a real minus sign)."""
    if value is None:
        return "–"
    return f"{float(value):.{digits}f}".replace("-", "−")


def _bmd_line(side: str, result: dict) -> str:
    """One line for a side's card: its CT-derived T-scores and WHO class, or nothing."""
    block = (result.get("bmd") or {}).get(side) or {}
    if block.get("status") != Status.OK:
        return ""
    who = str(block.get("who_class") or "–")
    return (
        '<p class="bmd-line">CT-derived estimate (not DXA): T-score neck '
        f"{_e(_fmt(block.get('fn_t_score'), 1))}, total hip {_e(_fmt(block.get('th_t_score'), 1))}"
        f" · <strong>{_e(CLASS_WORDS.get(who, who))}</strong></p>"
    )


def _bmd_section(result: dict, picture: str | None) -> str:
    """The calibrated-density section: numbers per side, uncertainty, reference, picture."""
    block = result.get("bmd")
    if not block:
        return ""
    calibration = block.get("calibration") or {}
    parts = [f'<section class="bmd"><h3>{_e(BMD_TITLE)}</h3>']
    if block.get("label"):
        parts.append(f'<p class="bmd-label">{_e(block["label"])}.</p>')
    if calibration.get("status") != Status.OK:
        code = str(calibration.get("status") or "").replace("_", " ")
        parts.append(
            '<p class="refused"><strong>Calibration refused</strong>'
            + (f" ({_e(code)})" if code not in ("", "refused") else "")
            + f": {_e(calibration.get('reason') or 'no reason given')}. "
            "No density numbers for this scan.</p>"
        )
        if picture:  # the calibration plot shows which tissue point failed
            parts.append(_bmd_figure(picture))
        parts.append("</section>")
        return "".join(parts)
    sides = {s: block.get(s) or {} for s in SIDE_ORDER}
    see = block.get("see_g_cm2")
    t_sd = next((b.get("t_score_sd") for b in sides.values() if b.get("t_score_sd")), None)

    def t_cell(value) -> str:
        text = _fmt(value, 2)
        return text if value is None or t_sd is None else f"{text} ± {_fmt(t_sd, 2)}"

    def who_cell(info: dict) -> str:
        who = info.get("who_class")
        if who is None:
            return "–"
        text = CLASS_WORDS.get(who, who)
        return text + (
            " (near a class limit)" if "class_uncertain" in info.get("flags", []) else ""
        )

    def status_cell(info: dict, side: str) -> str:
        if info.get("status") == Status.OK:
            return "measured"
        graded = result.get(side) or {}
        if info.get("status") == graded.get("status") and graded.get("reason"):
            return str(graded["reason"])  # the segmentation's reason, as the side's card says
        return (info.get("reason") or str(info.get("status") or "not measured")).rstrip(".")

    rows = (
        ("Status", status_cell),
        ("Femoral neck aBMD (g/cm²)", lambda i, s: _fmt(i.get("fn_abmd_g_cm2"), 3)),
        ("Total hip aBMD (g/cm²)", lambda i, s: _fmt(i.get("th_abmd_g_cm2"), 3)),
        ("Femoral neck T-score", lambda i, s: t_cell(i.get("fn_t_score"))),
        ("Total hip T-score", lambda i, s: t_cell(i.get("th_t_score"))),
        ("WHO class (lower T-score)", lambda i, s: who_cell(i)),
    )
    head = "".join(
        f"<th><span class='swatch' style='background:{_rgb(s)}'></span> {_e(s.capitalize())}</th>"
        for s in SIDE_ORDER
    )
    body = "".join(
        f"<tr><th>{_e(name)}</th>"
        + "".join(f"<td class='num'>{_e(cell(sides[s], s))}</td>" for s in SIDE_ORDER)
        + "</tr>"
        for name, cell in rows
    )
    parts.append(
        f'<table class="bmd-table"><thead><tr><th></th>{head}</tr></thead><tbody>{body}'
        "</tbody></table>"
    )
    notes = []
    for side in SIDE_ORDER:
        flags = [f for f in sides[side].get("flags") or [] if f != "class_uncertain"]
        if flags and sides[side].get("status") == Status.OK:
            words = "; ".join(flag_help(f) for f in flags)
            notes.append(f"{side.capitalize()}: {words}.")
    if see is not None:
        notes.append(
            f"Uncertainty: a validated CT method (CTXA) has a standard error of estimate of "
            f"{_fmt(see, 3)} g/cm² against DXA; the T-score's ± "
            + (f"{_fmt(t_sd, 2)} (1 SD) " if t_sd is not None else "")
            + "adds this scan's own calibration uncertainty to it. This phantomless estimate is "
            "not validated against DXA, so that is a lower bound."
        )
    if block.get("reference"):
        notes.append(f"T-scores against {block['reference']}.")
    parts.append('<ul class="bmd-notes">' + "".join(f"<li>{_e(n)}</li>" for n in notes) + "</ul>")
    if picture:
        parts.append(_bmd_figure(picture))
    parts.append("</section>")
    return "".join(parts)


def _bmd_figure(picture: str) -> str:
    return (
        '<img class="bmd-figure" alt="Calibration line and the DXA-like projection of each '
        'femur with the femoral-neck box and the total-hip region" '
        f'src="data:image/png;base64,{picture}">'
    )


def _identifier_block(result: dict) -> str:
    ids = result.get("identifiers")
    if not ids:
        what = "image fingerprint; " if result.get("case_source") == "fingerprint" else ""
        return (
            f'<p class="case">Case <strong>{_e(result.get("case"))}</strong> '
            f'<span class="hint">({what}patient identifiers are not shown — run '
            "with --include-identifiers to show them)</span></p>"
        )
    names = {
        "patient_name": "Patient",
        "patient_id": "Patient ID",
        "birth_date": "Birth date",
        "sex": "Sex",
        "study_date": "Study date",
        "accession_number": "Accession",
        "study_description": "Study",
        "input_name": "Input",
    }
    cells = "".join(
        f"<div><span class='k'>{_e(names.get(k, k))}</span> {_e(v)}</div>" for k, v in ids.items()
    )
    return (
        f'<p class="case">Case <strong>{_e(result.get("case"))}</strong></p>'
        f'<div class="identifiers">{cells}</div>'
    )


def _technical(result: dict) -> str:
    models = result.get("models") or {}
    rows = []
    clf = models.get("classifier") or {}
    if clf:
        sha = (clf.get("sha256") or "")[:12]
        name = clf.get("name") or clf.get("path_name") or "classifier"
        version = clf.get("version") or clf.get("model_version")
        created = str(clf.get("created") or "")[:10]
        parts = [name + (f" {version}" if version else "")]
        if created:
            parts.append(f"created {created}")
        parts += [f"sha256 {sha}…", f"{clf.get('n_features', '?')} features"]
        demo = " — DEMO, not for clinical use" if clf.get("demo") else ""
        rows.append(("Classifier", " · ".join(parts) + demo))
        params = (clf.get("radiomics_params_sha256") or "")[:12]
        if params:
            rows.append(("Radiomics parameters", f"sha256 {params}…"))
    seg = models.get("segmentation") or {}
    if seg:
        text = f"engine {seg.get('engine', '?')}"
        for key in ("name", "version"):
            if seg.get(key):
                text += f" · {seg[key]}"
        if seg.get("sha256"):
            text += f" · sha256 {str(seg['sha256'])[:12]}…"
        if seg.get("demo"):
            text += " — DEMO"
        rows.append(("Segmentation", text))
    geo = result.get("input") or {}
    if geo:
        size = " × ".join(str(v) for v in geo.get("size", []))
        spacing = " × ".join(f"{v:.3g}" for v in geo.get("spacing_mm", []))
        rows.append(("Input", f"{size} voxels, {spacing} mm, {geo.get('orientation', '')}"))
    timing = {k: v for k, v in (result.get("timing_s") or {}).items() if k != "total"}
    if timing:
        text = ", ".join(f"{k.replace('_', ' ')} {v:.1f} s" for k, v in timing.items())
        if "report" not in timing:
            text += f" ({sum(timing.values()):.1f} s before this report)"
        rows.append(("Timing", text))
    rows.append(("Software", f"FemurScreen {result.get('version', '')}"))
    body = "".join(f"<tr><th>{_e(k)}</th><td>{_e(v)}</td></tr>" for k, v in rows)
    return f'<section class="technical"><h3>Technical details</h3><table>{body}</table></section>'


def render_html(result: dict, pictures: dict[str, str] | None = None) -> str:
    """The report as one HTML string (pictures: base64 PNG per side and 'overview')."""
    pictures = pictures or {}
    demo = bool(result.get("demo"))
    banner = ""
    if demo:
        notice = result.get("demo_notice") or ""
        banner = (
            f'<div class="demo" role="alert"><strong>{_e(DEMO_BANNER)}</strong>'
            + (f"<span>{_e(notice)}</span>" if notice else "")
            + "</div>"
        )
    summary = "".join(
        f"<li><span class='swatch' style='background:{_rgb(s)}'></span>"
        f"<strong>{_e(s.capitalize())}:</strong> {_e(_summary_line(s, result.get(s) or {}))}</li>"
        for s in SIDE_ORDER
    )
    cards = "".join(
        _side_card(s, result.get(s) or {}, pictures.get(s), _bmd_line(s, result))
        for s in SIDE_ORDER
    )
    overview = ""
    if pictures.get("overview"):
        overview = (
            '<section class="overview"><h3>Both femurs (patient\'s right on the left)</h3>'
            f'<img alt="Axial and coronal slices through both femurs" '
            f'src="data:image/png;base64,{pictures["overview"]}"></section>'
        )
    title = f"FemurScreen report — {result.get('case', '')}"
    return _TEMPLATE.format(
        title=_e(title),
        css=_CSS,
        banner=banner,
        case=_identifier_block(result),
        created=_e(result.get("created_utc", "")),
        summary=summary,
        cards=cards,
        bmd=_bmd_section(result, pictures.get("bmd")),
        overview=overview,
        technical=_technical(result),
        footer=_e(
            "Screening aid only. Probabilities come from a radiomics model of the proximal femur "
            "on CT; they are not a diagnosis. DXA remains the reference for bone mineral density. "
            "HU values are uncalibrated and depend on scanner and protocol; the calibrated "
            "density is a CT-derived estimate, not a DXA measurement."
        ),
    )


_TEMPLATE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="generator" content="FemurScreen">
<title>{title}</title>
<style>{css}</style>
</head>
<body>
{banner}
<header>
  <h1>Opportunistic bone-status screening <span class="sub">proximal femur on CT</span></h1>
  {case}
  <p class="created">Generated {created} UTC</p>
</header>
<ul class="summary">{summary}</ul>
<div class="cards">{cards}</div>
{bmd}
{overview}
{technical}
<footer>{footer}</footer>
</body>
</html>
"""

_CSS = """
:root { --ink:#1d2329; --muted:#5d6b78; --line:#d9dee3; --bg:#ffffff; --card:#f7f9fa; }
* { box-sizing:border-box; }
body { margin:0 auto; max-width:1120px; padding:24px 28px 40px; color:var(--ink);
  background:var(--bg); font:15px/1.45 -apple-system, "Segoe UI", Roboto, "Helvetica Neue",
  Arial, "Noto Sans", "DejaVu Sans", sans-serif; }
h1 { font-size:22px; margin:0 0 4px; font-weight:650; letter-spacing:-0.01em; }
h1 .sub { font-weight:400; color:var(--muted); font-size:16px; margin-left:6px; }
h2 { font-size:18px; margin:0 0 10px; display:flex; align-items:center; gap:8px; }
h3 { font-size:15px; margin:0 0 8px; color:var(--muted); font-weight:600;
  text-transform:uppercase; letter-spacing:0.04em; }
header { border-bottom:2px solid var(--ink); padding-bottom:10px; margin-bottom:14px; }
.case { margin:4px 0; font-size:15px; }
.hint, .created { color:var(--muted); font-size:13px; }
.created { margin:2px 0 0; }
.identifiers { display:flex; flex-wrap:wrap; gap:4px 22px; font-size:14px; margin:6px 0; }
.identifiers .k { color:var(--muted); margin-right:4px; }
.demo { background:#b3261e; color:#fff; padding:12px 16px; border-radius:6px; margin:0 0 16px;
  font-size:16px; letter-spacing:0.02em; display:flex; flex-wrap:wrap; gap:4px 14px;
  align-items:baseline; }
.demo span { font-size:13px; opacity:0.92; }
.summary { list-style:none; padding:0; margin:0 0 16px; display:flex; gap:28px; flex-wrap:wrap;
  font-size:16px; }
.summary li { display:flex; align-items:center; gap:7px; }
.swatch { display:inline-block; width:12px; height:12px; border-radius:3px; flex:none; }
.cards { display:grid; grid-template-columns:1fr 1fr; gap:18px; }
.card { background:var(--card); border:1px solid var(--line); border-radius:8px;
  padding:16px 18px; break-inside:avoid; }
.badge { font-size:12px; font-weight:600; padding:2px 8px; border-radius:10px;
  text-transform:uppercase; letter-spacing:0.04em; margin-left:auto; }
.badge.ok { background:#e3f1e8; color:#1e6b3f; }
.badge.muted { background:#eceff1; color:#55606b; }
.predicted { margin:0 0 8px; font-size:16px; }
.bars { margin:0 0 12px; }
.bar-row { display:grid; grid-template-columns:110px 1fr 48px; align-items:center; gap:10px;
  margin:5px 0; font-size:14px; }
.bar-row.predicted .bar-label { font-weight:700; }
.bar-track { height:14px; background:#e4e8eb; border-radius:7px; overflow:hidden; }
.bar-fill { display:block; height:100%; border-radius:7px; }
.bar-value { text-align:right; font-variant-numeric:tabular-nums; }
.flags { margin:8px 0 10px; padding:8px 12px 8px 28px; background:#fff5e0;
  border-left:4px solid #d08c00; border-radius:4px; font-size:14px; }
.flags li { margin:2px 0; }
.facts { color:var(--muted); font-size:13px; margin:6px 0; }
.quality { color:var(--muted); font-size:13px; margin:6px 0; }
.quality.low { color:var(--ink); font-size:14px; padding:6px 12px; background:#fff5e0;
  border-left:4px solid #d08c00; border-radius:4px; }
table { border-collapse:collapse; width:100%; font-size:13.5px; }
.density { margin:6px 0 12px; }
.density th, .density td { padding:4px 6px; border-bottom:1px solid var(--line); text-align:left; }
.density th { color:var(--muted); font-weight:600; }
.num { text-align:right !important; font-variant-numeric:tabular-nums; }
img.slices, .overview img { width:100%; border-radius:4px; display:block; background:#000; }
.overview { margin:20px 0 0; break-inside:avoid; }
.bmd-line { margin:6px 0 10px; font-size:14px; }
.bmd { margin:20px 0 0; break-inside:avoid; }
.bmd-label { margin:0 0 8px; color:var(--muted); font-size:13px; }
.bmd-table { max-width:860px; margin:0 0 8px; table-layout:fixed; }
.bmd-table th, .bmd-table td { padding:4px 8px; border-bottom:1px solid var(--line); }
.bmd-table th:first-child { width:230px; white-space:nowrap; }
.bmd-table tbody th { text-align:left; color:var(--muted); font-weight:600; }
.bmd-table thead th { text-align:right; }
.bmd-notes { margin:6px 0 10px; padding-left:20px; color:var(--muted); font-size:13px; }
.refused { background:#fff5e0; border-left:4px solid #d08c00; padding:8px 12px;
  border-radius:4px; font-size:14px; }
img.bmd-figure { width:100%; display:block; border:1px solid var(--line); border-radius:4px; }
.technical { margin:22px 0 0; }
.technical th { text-align:left; color:var(--muted); font-weight:600; width:180px;
  vertical-align:top; padding:3px 8px 3px 0; }
.technical td { padding:3px 0; word-break:break-word; }
footer { margin-top:22px; padding-top:10px; border-top:1px solid var(--line); color:var(--muted);
  font-size:12.5px; }
@media (max-width: 820px) { .cards { grid-template-columns:1fr; } }
@media print {
  @page { margin:12mm 10mm; }
  body { max-width:none; padding:0; font-size:11px; }
  .cards { grid-template-columns:1fr 1fr; gap:10px; }
  .card { padding:10px 12px; }
  .bar-row { grid-template-columns:82px 1fr 36px; font-size:11px; margin:3px 0; }
  .demo { font-size:13px; padding:8px 12px; }
  h1 { font-size:18px; }
  h2 { font-size:14px; }
  table { font-size:10.5px; }
  .density th, .density td { padding:2px 4px; }
  .overview img { max-height:80mm; object-fit:contain; }
  * { -webkit-print-color-adjust:exact; print-color-adjust:exact; }
  .card, .overview, .technical { break-inside:avoid; }
  .overview { break-before:auto; }
}
"""
