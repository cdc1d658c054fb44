"""The Slicer extension packages every file the module needs, and describes itself fully.

Slicer installs only what ``FemurScreen/CMakeLists.txt`` lists: a Python file or resource
that is in the repository but not in the list works from the source tree and is missing from
the extension users download. These tests catch that without building the extension.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MODULE = ROOT / "FemurScreen"
MODULE_CMAKE = MODULE / "CMakeLists.txt"
TOP_CMAKE = ROOT / "CMakeLists.txt"


def _ignored(relative: Path) -> bool:
    """Build artefacts that are never part of the extension (see .gitignore)."""
    return any(
        part == "__pycache__" or part.endswith(".egg-info") or part.startswith(".")
        for part in relative.parts
    ) or relative.suffix in {".pyc", ".pyo"}


def _strip_comment(line: str) -> str:
    """A CMake line without its ``#`` comment (a ``#`` inside quotes is text)."""
    quoted = False
    for i, char in enumerate(line):
        if char == '"' and (i == 0 or line[i - 1] != "\\"):
            quoted = not quoted
        elif char == "#" and not quoted:
            return line[:i]
    return line


def _cmake_text(path: Path) -> str:
    """The file without comments."""
    return "\n".join(_strip_comment(line) for line in path.read_text(encoding="utf-8").splitlines())


def _listed(variable_names: tuple[str, ...]) -> set[str]:
    """Entries of ``set(VAR ...)`` blocks in the module CMakeLists, ${MODULE_NAME} expanded."""
    text = _cmake_text(MODULE_CMAKE)
    name = re.search(r"set\(\s*MODULE_NAME\s+(\S+?)\s*\)", text).group(1)
    out: set[str] = set()
    for variable in variable_names:
        match = re.search(rf"set\(\s*{variable}\s+(.*?)\)", text, re.S)
        assert match, f"{MODULE_CMAKE}: no set({variable} ...) block"
        out |= {e.replace("${MODULE_NAME}", name) for e in match.group(1).split()}
    return out


def _files(folder: Path, pattern: str) -> set[str]:
    return {
        p.relative_to(MODULE).as_posix()
        for p in folder.rglob(pattern)
        if p.is_file() and not _ignored(p.relative_to(MODULE))
    }


def test_every_python_file_is_listed():
    listed = _listed(("MODULE_PYTHON_SCRIPTS", "FEMURSCREEN_CORE_SCRIPTS"))
    missing = sorted(_files(MODULE, "*.py") - listed)
    assert not missing, "add these to FemurScreen/CMakeLists.txt (scripts):\n  " + "\n  ".join(
        missing
    )


def test_every_resource_is_listed():
    listed = _listed(("MODULE_PYTHON_RESOURCES",))
    missing = sorted(_files(MODULE / "Resources", "*") - listed)
    assert not missing, "add these to FemurScreen/CMakeLists.txt (resources):\n  " + "\n  ".join(
        missing
    )


def test_every_listed_file_exists():
    listed = _listed(
        ("MODULE_PYTHON_SCRIPTS", "FEMURSCREEN_CORE_SCRIPTS", "MODULE_PYTHON_RESOURCES")
    )
    absent = sorted(entry for entry in listed if not (MODULE / entry).is_file())
    assert not absent, "listed in FemurScreen/CMakeLists.txt but absent:\n  " + "\n  ".join(absent)


def test_module_is_built_as_a_scripted_module_with_generic_tests():
    text = _cmake_text(MODULE_CMAKE)
    call = re.search(r"slicerMacroBuildScriptedModule\((.*?)\)", text, re.S)
    assert call, "slicerMacroBuildScriptedModule(...) is missing"
    body = call.group(1)
    assert re.search(r"NAME\s+\$\{MODULE_NAME\}", body)
    assert "WITH_GENERIC_TESTS" in body
    assert "${FEMURSCREEN_CORE_SCRIPTS}" in body and "${MODULE_PYTHON_RESOURCES}" in body
    assert (MODULE / "Resources" / "Icons" / "FemurScreen.png").is_file()
    assert (MODULE / "Resources" / "UI" / "FemurScreen.ui").is_file()


def _extension_metadata() -> dict[str, str]:
    text = _cmake_text(TOP_CMAKE)
    return {
        m.group(1): m.group(2).strip().strip('"')
        for m in re.finditer(r"set\(\s*(EXTENSION_[A-Z_]+)\s+(.*?)\)\s*$", text, re.M)
    }


@pytest.mark.parametrize(
    "key",
    [
        "EXTENSION_HOMEPAGE",
        "EXTENSION_CATEGORY",
        "EXTENSION_CONTRIBUTORS",
        "EXTENSION_DESCRIPTION",
        "EXTENSION_ICONURL",
        "EXTENSION_SCREENSHOTURLS",
        "EXTENSION_DEPENDS",
    ],
)
def test_extension_metadata_is_filled_in(key):
    value = _extension_metadata().get(key, "")
    assert value, f"{TOP_CMAKE.name}: set({key} ...) is missing or empty"
    if key in ("EXTENSION_HOMEPAGE", "EXTENSION_ICONURL", "EXTENSION_SCREENSHOTURLS"):
        assert all(u.startswith("https://") for u in value.split()), value


def test_icon_and_screenshot_urls_point_at_files_in_this_repository():
    """The index downloads these from the repository's main branch: the files must exist."""
    meta = _extension_metadata()
    urls = [meta["EXTENSION_ICONURL"], *meta["EXTENSION_SCREENSHOTURLS"].split()]
    for url in urls:
        match = re.match(r"https://raw\.githubusercontent\.com/[^/]+/[^/]+/[^/]+/(.+)$", url)
        assert match, f"not a raw.githubusercontent.com URL: {url}"
        assert (ROOT / match.group(1)).is_file(), f"{url} -> {match.group(1)} is not in the repo"


def test_top_level_builds_the_module_and_declares_dependencies():
    text = _cmake_text(TOP_CMAKE)
    assert re.search(r"add_subdirectory\(\s*FemurScreen\s*\)", text)
    assert re.search(r"find_package\(\s*Slicer\s+REQUIRED\s*\)", text)
    assert "Slicer_EXTENSION_GENERATE_CONFIG" in text and "Slicer_EXTENSION_CPACK" in text


# ---------------------------------------------------------------- the review module

REVIEW_PY = MODULE / "FemurScreenReview.py"
REVIEW_UI = MODULE / "Resources" / "UI" / "FemurScreenReview.ui"


def test_review_module_and_its_resources_are_listed():
    scripts = _listed(("MODULE_PYTHON_SCRIPTS",))
    resources = _listed(("MODULE_PYTHON_RESOURCES",))
    assert {"FemurScreenReview.py", "FemurScreenLib/review.py"} <= scripts
    assert {"Resources/UI/FemurScreenReview.ui", "Resources/Icons/FemurScreenReview.png"} <= (
        resources
    )
    assert re.search(
        r"slicer_add_python_unittest\(\s*SCRIPT\s+\$\{MODULE_NAME\}Review\.py\s*\)",
        _cmake_text(MODULE_CMAKE),
    )


def _review_tree():
    import ast

    return ast.parse(REVIEW_PY.read_text(encoding="utf-8"), filename=str(REVIEW_PY))


def test_review_module_defines_what_slicer_looks_up_by_file_name():
    """Slicer finds a scripted module's classes by the file name: X, XWidget, XTest."""
    import ast

    classes = {n.name for n in ast.walk(_review_tree()) if isinstance(n, ast.ClassDef)}
    assert {"FemurScreenReview", "FemurScreenReviewWidget", "FemurScreenReviewTest"} <= classes


def test_every_review_widget_name_exists_in_its_ui_file():
    import ast
    import xml.etree.ElementTree as ET

    widgets = {w.get("name") for w in ET.parse(REVIEW_UI).iter("widget")}
    used = {
        node.attr
        for node in ast.walk(_review_tree())
        if isinstance(node, ast.Attribute)
        and isinstance(node.value, ast.Attribute)
        and node.value.attr == "ui"
    }
    assert used, "the review widget uses no .ui names?"
    missing = sorted(used - widgets)
    assert not missing, f"FemurScreenReview.py uses widgets missing from the .ui: {missing}"


def test_review_logic_is_qt_free():
    """The widget is the only Qt layer: FemurScreenLib/review.py never imports qt or ctk."""
    import ast

    tree = ast.parse((MODULE / "FemurScreenLib" / "review.py").read_text(encoding="utf-8"))
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module.split(".")[0])
    assert not imported & {"qt", "ctk", "PythonQt", "slicer.util"}, imported


def test_review_shortcuts_do_not_take_keys_slicer_already_binds():
    """Ctrl+Left/Right switch modules and Ctrl+Shift+Left/Right step Sequences in Slicer
    (qSlicerModuleSelectorToolBar.cxx, qMRMLSequenceBrowserPlayWidget.cxx)."""
    import ast

    for node in ast.walk(_review_tree()):
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "SHORTCUTS" for t in node.targets
        ):
            keys = set(ast.literal_eval(node.value).values())
            break
    else:
        raise AssertionError("no SHORTCUTS table in FemurScreenReview.py")
    taken = {"Ctrl+Left", "Ctrl+Right", "Ctrl+Shift+Left", "Ctrl+Shift+Right", "Alt+Left"}
    assert keys and not keys & taken
