"""Features and bone-status results as MRML tables and a bar chart.

Three nodes per segmentation, reused on every recompute so that views showing them update in
place: the features (one row per feature, one column per side), the results (one row per side)
and the class probabilities (one row per class) that the bar chart plots, one series per side.
The tables are locked: they show computed values, which a user should not edit by hand.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import vtk
from femurscreen.labels import CLASSES, SIDE_COLORS
from femurscreen.output.columns import BMD_COLUMNS, QUALITY_COLUMNS

# Columns of a features row that are not features (the density estimate and the segmentation
# quality are shown as results).
NON_FEATURE_KEYS = frozenset(
    {"case_id", "side", "status", "error", "radiomics_params_sha256", *BMD_COLUMNS}
    | set(QUALITY_COLUMNS)
)
NUMBER_COLUMNS = frozenset(
    {*(f"p_{c}" for c in CLASSES), "volume_ml", "fn_t_score", "th_t_score", "seg_quality"}
)

RESULT_COLUMNS: tuple[tuple[str, str], ...] = (
    ("side", "Side"),
    ("status", "Status"),
    ("predicted", "Predicted class"),
    *((f"p_{c}", f"P({c})") for c in CLASSES),
    ("fn_t_score", "T-score neck (CT est., not DXA)"),
    ("th_t_score", "T-score total hip (CT est., not DXA)"),
    ("who_class", "WHO class (CT est.)"),
    ("applicable", "Within training data"),
    ("seg_quality", "Mask check (Dice of two engines)"),
    ("volume_ml", "Mask volume (ml)"),
    ("flags", "Flags"),
    ("note", "Note"),
)


def _string_column(name: str, values: Sequence[str]) -> vtk.vtkStringArray:
    column = vtk.vtkStringArray()
    column.SetName(name)
    for value in values:
        column.InsertNextValue("" if value is None else str(value))
    return column


def _double_column(name: str, values: Sequence[float | None]) -> vtk.vtkDoubleArray:
    column = vtk.vtkDoubleArray()
    column.SetName(name)
    for value in values:
        column.InsertNextValue(math.nan if value is None else float(value))
    return column


def _ensure_table(scene, node, name: str):
    if node is None or node.GetScene() is not scene:
        node = scene.AddNewNodeByClass("vtkMRMLTableNode", scene.GenerateUniqueName(name))
    return node


def _fill(node, columns: Sequence[vtk.vtkAbstractArray], titles: Mapping[str, str]) -> None:
    table = vtk.vtkTable()
    for column in columns:
        table.AddColumn(column)
    was_modifying = node.StartModify()
    node.SetLocked(False)
    node.SetAndObserveTable(table)
    for column in columns:
        if column.GetName() in titles:
            node.SetColumnTitle(column.GetName(), titles[column.GetName()])
    node.SetUseColumnTitleAsColumnHeader(True)
    node.SetLocked(True)
    node.EndModify(was_modifying)


def _numeric(value) -> float | None:
    if isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number


def feature_names(rows: Sequence[Mapping]) -> list[str]:
    """Feature keys of the rows, in first-seen order (identification columns left out)."""
    names: dict[str, None] = {}
    for row in rows:
        for key, value in row.items():
            if key not in NON_FEATURE_KEYS and _numeric(value) is not None:
                names.setdefault(key, None)
    return list(names)


def features_table(scene, rows: Sequence[Mapping], node=None, name: str = "FemurScreen features"):
    """One row per feature, one column per side; returns the (new or reused) table node."""
    node = _ensure_table(scene, node, name)
    names = feature_names(rows)
    columns: list[vtk.vtkAbstractArray] = [_string_column("feature", names)]
    titles = {"feature": "Feature"}
    for row in rows:
        side = str(row.get("side", ""))
        columns.append(_double_column(side, [_numeric(row.get(n)) for n in names]))
        titles[side] = side.capitalize()
    _fill(node, columns, titles)
    return node


def results_table(scene, results: Sequence[Mapping], node=None, name: str = "FemurScreen results"):
    """One row per side with the predicted class, the probabilities and what to watch."""
    node = _ensure_table(scene, node, name)
    columns: list[vtk.vtkAbstractArray] = []
    for key, _title in RESULT_COLUMNS:
        values = [row.get(key) for row in results]
        if key in NUMBER_COLUMNS:
            columns.append(_double_column(key, [_numeric(v) for v in values]))
        elif key == "applicable":
            columns.append(_string_column(key, ["yes" if v else "no" for v in values]))
        else:
            columns.append(_string_column(key, ["" if v is None else str(v) for v in values]))
    _fill(node, columns, dict(RESULT_COLUMNS))
    return node


def probability_chart(
    scene,
    results: Sequence[Mapping],
    table_node=None,
    chart_node=None,
    name: str = "FemurScreen probabilities",
):
    """Bar chart of the class probabilities, one series per side; returns (table, chart)."""
    table_node = _ensure_table(scene, table_node, name)
    columns: list[vtk.vtkAbstractArray] = [
        _string_column("class", list(CLASSES)),
        _double_column("x", list(range(len(CLASSES)))),
    ]
    sides = [str(row.get("side", "")) for row in results]
    for row, side in zip(results, sides, strict=True):
        columns.append(_double_column(side, [_numeric(row.get(f"p_{c}")) for c in CLASSES]))
    _fill(table_node, columns, {"class": "Class", **{s: s.capitalize() for s in sides}})

    if chart_node is None or chart_node.GetScene() is not scene:
        chart_node = scene.AddNewNodeByClass("vtkMRMLPlotChartNode", scene.GenerateUniqueName(name))
    old_series = [
        chart_node.GetNthPlotSeriesNode(i) for i in range(chart_node.GetNumberOfPlotSeriesNodes())
    ]
    chart_node.RemoveAllPlotSeriesNodeIDs()
    for series in old_series:
        if series is not None:
            scene.RemoveNode(series)
    for side in sides:
        series = scene.AddNewNodeByClass("vtkMRMLPlotSeriesNode", f"{name} {side}")
        series.SetAndObserveTableNodeID(table_node.GetID())
        series.SetPlotType(series.PlotTypeBar)
        series.SetXColumnName("x")
        series.SetYColumnName(side)
        series.SetLabelColumnName("class")
        series.SetColor(*SIDE_COLORS.get(side, (0.5, 0.5, 0.5)))
        chart_node.AddAndObservePlotSeriesNodeID(series.GetID())
    chart_node.SetTitle("Bone status probabilities")
    chart_node.SetXAxisTitle("normal / osteopenia / osteoporosis")
    chart_node.SetYAxisTitle("probability")
    chart_node.SetYAxisRangeAuto(False)
    chart_node.SetYAxisRange(0.0, 1.0)
    chart_node.SetLegendVisibility(True)
    return table_node, chart_node
