"""The Qt widget without Qt: its .ui file, its names and its syntax.

Desktop Slicer is not available to the test suite, so the widget is checked statically:
every ``self.ui.<name>`` the module uses exists in ``FemurScreen.ui``; every
``SlicerParameterName`` in the .ui is a typed parameter of the parameter node; the module and
its Lib compile with this Python (CI runs 3.11; Slicer 5.10 runs 3.12); and the import
direction FemurScreen.py -> FemurScreenLib -> femurscreen holds (no Qt below the widget).
"""

from __future__ import annotations

import ast
import py_compile
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MODULE = ROOT / "FemurScreen"
MODULE_PY = MODULE / "FemurScreen.py"
UI_FILE = MODULE / "Resources" / "UI" / "FemurScreen.ui"
LIB = MODULE / "FemurScreenLib"
CORE = MODULE / "femurscreen"

# Widget classes a Slicer .ui may use: Qt's own plus those Slicer's designer plugins provide.
KNOWN_CLASSES = {
    "QLabel", "QCheckBox", "QComboBox", "QPushButton", "QProgressBar", "QPlainTextEdit",
    "QWidget", "QFrame", "QGroupBox", "QLineEdit", "QSpinBox", "QDoubleSpinBox",
    "qMRMLWidget", "qMRMLNodeComboBox", "qMRMLSegmentEditorWidget", "qMRMLTableView",
    "qMRMLPlotWidget", "ctkCollapsibleButton",
}  # fmt: skip


def _ui_widgets() -> dict[str, str]:
    """Widget name -> class name for every widget in the .ui file."""
    tree = ET.parse(UI_FILE)
    return {w.get("name"): w.get("class") for w in tree.iter("widget")}


def _ui_parameter_names() -> dict[str, str]:
    """Widget name -> SlicerParameterName for the widgets bound to the parameter node."""
    out = {}
    for widget in ET.parse(UI_FILE).iter("widget"):
        for prop in widget.findall("property"):
            if prop.get("name") == "SlicerParameterName":
                out[widget.get("name")] = prop.findtext("string")
    return out


def _module_tree() -> ast.Module:
    return ast.parse(MODULE_PY.read_text(encoding="utf-8"), filename=str(MODULE_PY))


def _ui_attributes_used() -> set[str]:
    """Names accessed as ``self.ui.<name>`` in FemurScreen.py."""
    names = set()
    for node in ast.walk(_module_tree()):
        if (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Attribute)
            and node.value.attr == "ui"
            and isinstance(node.value.value, ast.Name)
            and node.value.value.id == "self"
        ):
            names.add(node.attr)
    return names


def _parameter_fields() -> dict[str, str]:
    """Annotated fields of the @parameterNodeWrapper class, name -> annotation source."""
    for node in ast.walk(_module_tree()):
        if isinstance(node, ast.ClassDef) and any(
            isinstance(d, ast.Name) and d.id == "parameterNodeWrapper" for d in node.decorator_list
        ):
            return {
                item.target.id: ast.unparse(item.annotation)
                for item in node.body
                if isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name)
            }
    raise AssertionError("FemurScreen.py has no @parameterNodeWrapper class")


def test_every_ui_name_the_widget_uses_exists():
    widgets = _ui_widgets()
    used = _ui_attributes_used()
    assert used, "the widget uses no self.ui.<name> at all?"
    missing = sorted(used - set(widgets))
    assert not missing, f"FemurScreen.py uses widgets that FemurScreen.ui lacks: {missing}"


def test_ui_uses_only_known_widget_classes_and_declares_custom_ones():
    widgets = _ui_widgets()
    unknown = sorted({c for c in widgets.values()} - KNOWN_CLASSES)
    assert not unknown, f"widget classes not provided by Qt or Slicer: {unknown}"
    declared = {c.findtext("class") for c in ET.parse(UI_FILE).iter("customwidget")}
    custom = {c for c in widgets.values() if c.startswith(("qMRML", "ctk"))}
    assert custom <= declared, f"undeclared custom widgets: {sorted(custom - declared)}"
    root = ET.parse(UI_FILE).getroot().find("widget")
    assert root.get("class") == "qMRMLWidget" and root.get("name") == "FemurScreen"


def test_mrml_widgets_receive_the_scene():
    tree = ET.parse(UI_FILE)
    receivers = {
        c.findtext("receiver")
        for c in tree.iter("connection")
        if c.findtext("signal") == "mrmlSceneChanged(vtkMRMLScene*)"
        and c.findtext("slot") == "setMRMLScene(vtkMRMLScene*)"
    }
    needs_scene = {
        name
        for name, cls in _ui_widgets().items()
        if cls in {"qMRMLNodeComboBox", "qMRMLSegmentEditorWidget", "qMRMLPlotWidget"}
    }
    assert needs_scene <= receivers, f"no scene for {sorted(needs_scene - receivers)}"


def test_bound_widgets_match_typed_parameters():
    fields = _parameter_fields()
    bound = _ui_parameter_names()
    unknown = sorted(set(bound.values()) - set(fields))
    assert not unknown, f"SlicerParameterName without a parameter: {unknown}"
    widgets = _ui_widgets()
    # The connectors Slicer's parameterNodeWrapper has for these widget/type pairs.
    for widget, parameter in bound.items():
        cls, annotation = widgets[widget], fields[parameter]
        if cls == "qMRMLNodeComboBox":
            assert annotation.startswith("vtkMRML"), (widget, annotation)
        elif cls == "QCheckBox":
            assert annotation == "bool", (widget, annotation)
        elif cls == "QComboBox":
            assert "Choice(" in annotation, f"{widget}: a combo box needs a Choice annotation"
        else:
            raise AssertionError(f"no parameter connector for {cls} ({widget})")


def test_quality_check_box_is_bound_and_reaches_the_segmentation():
    """The "check the masks with a second engine" box (made in code, in the Segment form) is
    bound to the bool parameter ``checkQuality`` (default on, as in ``screen``) through
    Slicer's ``connectParametersToGui`` and released with ``disconnectGui``; the Segment
    button passes its value to the segmentation, and the panel shows each side's mask check."""
    fields = _parameter_fields()
    assert fields.get("checkQuality") == "bool"
    tree = _module_tree()
    defaults = {
        item.target.id: item.value
        for node in ast.walk(tree)
        if isinstance(node, ast.ClassDef) and node.name == "FemurScreenParameterNode"
        for item in node.body
        if isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name)
    }
    assert isinstance(defaults["checkQuality"], ast.Constant) and defaults["checkQuality"].value
    calls = {ast.unparse(node.func): node for node in ast.walk(tree) if isinstance(node, ast.Call)}
    bind = calls["self._parameterNode.connectParametersToGui"]
    assert ast.unparse(bind.args[0]) == "{'checkQuality': self.qualityCheckBox}"
    assert "self._parameterNode.disconnectGui" in calls
    start = calls["self.state.start_segmentation"]
    assert {k.arg: ast.unparse(k.value) for k in start.keywords} == {"quality": "p.checkQuality"}
    assert "quality_text" in calls  # the per-side "Mask check" line of the panel


def test_node_selectors_accept_the_parameter_types():
    fields = _parameter_fields()
    tree = ET.parse(UI_FILE)
    for widget in tree.iter("widget"):
        if widget.get("class") != "qMRMLNodeComboBox":
            continue
        props = {p.get("name"): p for p in widget.findall("property")}
        types = [s.text for s in props["nodeTypes"].iter("string")]
        parameter = props["SlicerParameterName"].findtext("string")
        assert types == [fields[parameter]], (widget.get("name"), types)


def _python_files() -> list[Path]:
    return [MODULE_PY, *sorted(LIB.glob("*.py"))]


@pytest.mark.parametrize("path", _python_files(), ids=lambda p: p.name)
def test_module_compiles_with_this_python_and_parses_as_311(path, tmp_path):
    py_compile.compile(str(path), cfile=str(tmp_path / "out.pyc"), doraise=True)
    # Slicer 5.10 runs Python 3.12, CI 3.11: refuse syntax newer than 3.11 either way.
    ast.parse(path.read_text(encoding="utf-8"), filename=str(path), feature_version=(3, 11))


def _imported_roots(path: Path) -> set[str]:
    roots = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            roots |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            roots.add(node.module)
    return roots


@pytest.mark.parametrize("path", sorted(LIB.glob("*.py")), ids=lambda p: p.name)
def test_lib_never_imports_qt(path):
    forbidden = {"qt", "ctk", "slicer.ScriptedLoadableModule", "slicer.parameterNodeWrapper"}
    bad = {m for m in _imported_roots(path) if m in forbidden or m.split(".")[0] in {"qt", "ctk"}}
    assert not bad, f"{path.name} imports {sorted(bad)}: the Logic must stay Qt-free"


def test_both_widgets_reload_the_lib_and_core_through_one_mixin(monkeypatch):
    """Reload drops FemurScreenLib and the core from sys.modules, then reloads as Slicer does."""
    monkeypatch.syspath_prepend(str(MODULE))
    import FemurScreenLib

    calls = []

    class SlicerWidget:  # stands in for ScriptedLoadableModuleWidget
        def onReload(self):
            calls.append("slicer")

    class Widget(FemurScreenLib.ReloadsPackages, SlicerWidget):
        pass

    monkeypatch.setattr(FemurScreenLib, "forget_packages", lambda: calls.append("forget"))
    Widget().onReload()
    assert calls == ["forget", "slicer"]
    for path in (MODULE_PY, MODULE / "FemurScreenReview.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        widgets = [
            n for n in tree.body if isinstance(n, ast.ClassDef) and n.name.endswith("Widget")
        ]
        assert [ast.unparse(b) for b in widgets[0].bases][0] == "ReloadsPackages", path.name
        assert not any(
            isinstance(f, ast.FunctionDef) and f.name == "onReload" for f in widgets[0].body
        ), path.name


def test_core_never_imports_slicer_or_the_module():
    offenders = {}
    for path in CORE.rglob("*.py"):
        roots = {m.split(".")[0] for m in _imported_roots(path)}
        bad = roots & {"slicer", "qt", "ctk", "vtk", "FemurScreenLib", "FemurScreen"}
        if bad:
            offenders[str(path.relative_to(ROOT))] = sorted(bad)
    assert not offenders, f"the core must not import Slicer, Qt, VTK or the module: {offenders}"


def test_help_text_warns_about_the_demo_model():
    text = MODULE_PY.read_text(encoding="utf-8")
    assert "DEMO" in text and "helpText" in text
    assert "demoBannerLabel" in _ui_widgets()
    assert sys.version_info >= (3, 11)


# ---------------------------------------------------------------------------- panel defects


def _method(name: str) -> ast.FunctionDef:
    for node in ast.walk(_module_tree()):
        if isinstance(node, ast.FunctionDef) and node.name == name:
            return node
    raise AssertionError(f"FemurScreen.py has no method {name}")


def _calls(node: ast.AST) -> list[str]:
    """Dotted names of every call under ``node`` (``self.ui.x.y`` -> "self.ui.x.y")."""
    out = []
    for call in ast.walk(node):
        if isinstance(call, ast.Call):
            out.append(ast.unparse(call.func))
    return out


def test_editor_follows_effect_registrations():
    """Effects registered after the panel is built show up (as the Segment Editor module does):
    qSlicerSegmentEditorEffectFactory emits effectRegistered(QString)."""
    setup = ast.unparse(_method("setup"))
    assert "qSlicerSegmentEditorEffectFactory.instance()" in setup
    assert "'effectRegistered(QString)', self.onEffectRegistered" in setup
    assert "self.ui.segmentEditorWidget.updateEffectList" in _calls(_method("onEffectRegistered"))
    assert "effectRegistered(QString)" in ast.unparse(_method("cleanup"))  # disconnected


def test_source_volume_is_set_only_with_a_segmentation():
    source = ast.unparse(_method("onVolumeSelected"))
    assert "setSourceVolumeNode" in source and "outputSegmentation" in source
    body = _method("onVolumeSelected").body
    guarded = [n for n in body if isinstance(n, ast.If) and "setSourceVolumeNode" in ast.unparse(n)]
    assert guarded and "segmentation" in ast.unparse(guarded[0].test)


def test_no_wait_cursor_around_questions_and_no_swallowing_assumed():
    """tryWithErrorDisplay re-raises (Slicer's util.py), so the panel never relies on it for
    jobs; the install question is asked with the normal cursor."""
    text = MODULE_PY.read_text(encoding="utf-8")
    for name in ("onPollJob", "onRecompute", "_startGrading", "_segmentationFinished"):
        assert "tryWithErrorDisplay" not in ast.unparse(_method(name)), name
    ensure = _method("_ensureDependencies")
    assert "WaitCursor()" not in ast.unparse(ensure)
    confirm = next(n for n in ast.walk(ensure) if isinstance(n, ast.FunctionDef))
    calls = _calls(confirm)
    assert calls.index("slicer.util.confirmOkCancelDisplay") < calls.index(
        "slicer.app.setOverrideCursor"
    )
    assert "PanelState" in text and "self.state.controls(" in ast.unparse(_method("_updateButtons"))


def test_self_test_never_passes_silently():
    tree = ast.unparse(_module_tree())
    assert "unittest.SkipTest" in tree
    assert "ENGINE = 'classical'" in tree  # no PyTorch needed for the self-test
    for name in ("test_sample_ct_end_to_end", "test_background_segmentation_and_grading"):
        method = _method(name)
        assert not any(isinstance(n, ast.Return) for n in ast.walk(method)), name
        assert ast.unparse(method.body[0]).startswith("self._requirePackages("), name
