"""The Slicer module files agree with each other (no Slicer/Qt needed): .ui names, parameters,
CMake resources, catalog entry, icon, terminology."""

from __future__ import annotations

import ast
import fnmatch
import json
import re
import xml.etree.ElementTree as ElementTree
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
MODULE_DIR = REPO / "JCSDiagnosis"
MODULE_FILE = MODULE_DIR / "JCSDiagnosis.py"
UI_FILE = MODULE_DIR / "Resources" / "UI" / "JCSDiagnosis.ui"


@pytest.fixture(scope="module")
def module_tree() -> ast.Module:
    return ast.parse(MODULE_FILE.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def ui_widgets() -> dict[str, ElementTree.Element]:
    tree = ElementTree.parse(UI_FILE)
    return {widget.get("name"): widget for widget in tree.iter("widget")}


def _classes(tree: ast.Module) -> dict[str, ast.ClassDef]:
    return {node.name: node for node in tree.body if isinstance(node, ast.ClassDef)}


def test_module_has_the_template_classes(module_tree):
    classes = _classes(module_tree)
    for name, base in [
        ("JCSDiagnosis", "ScriptedLoadableModule"),
        ("JCSDiagnosisWidget", "ScriptedLoadableModuleWidget"),
        ("JCSDiagnosisLogic", "ScriptedLoadableModuleLogic"),
        ("JCSDiagnosisTest", "ScriptedLoadableModuleTest"),
    ]:
        assert name in classes, name
        assert base in [b.id for b in classes[name].bases if isinstance(b, ast.Name)]
    wrapper = classes["JCSDiagnosisParameterNode"]
    assert any(isinstance(d, ast.Name) and d.id == "parameterNodeWrapper" for d in wrapper.decorator_list)
    test_methods = [f.name for f in classes["JCSDiagnosisTest"].body if isinstance(f, ast.FunctionDef)]
    assert "runTest" in test_methods and any(m.startswith("test_") for m in test_methods)


def test_every_ui_name_used_by_the_widget_exists(ui_widgets):
    used = set(re.findall(r"self\.ui\.(\w+)", MODULE_FILE.read_text(encoding="utf-8")))
    assert used, "the widget uses no .ui widgets?"
    assert used <= set(ui_widgets), f"missing in {UI_FILE.name}: {sorted(used - set(ui_widgets))}"


def test_every_parameter_is_bound_to_a_widget(module_tree, ui_widgets):
    wrapper = _classes(module_tree)["JCSDiagnosisParameterNode"]
    parameters = {node.target.id for node in wrapper.body if isinstance(node, ast.AnnAssign)}
    bound = {}
    for name, widget in ui_widgets.items():
        for prop in widget.findall("property"):
            if prop.get("name") == "SlicerParameterName":
                bound[prop.find("string").text] = name
    assert parameters == set(bound), f"parameters {parameters} vs widgets bound {bound}"


def test_cmake_lists_every_resource_and_script():
    text = (MODULE_DIR / "CMakeLists.txt").read_text(encoding="utf-8")
    resources = re.findall(r"^\s+(Resources/\S+)$", text, flags=re.MULTILINE)
    for resource in resources:
        path = MODULE_DIR / resource.replace("${MODULE_NAME}", "JCSDiagnosis")
        assert path.is_file(), resource
    assert {
        p.relative_to(MODULE_DIR).as_posix() for p in (MODULE_DIR / "Resources").rglob("*") if p.is_file()
    } == {r.replace("${MODULE_NAME}", "JCSDiagnosis") for r in resources}
    assert "slicerMacroBuildScriptedModule" in text and "slicer_add_python_unittest" in text
    assert "jcs/*.py" in text and "JCSDiagnosisLib/*.py".replace("JCSDiagnosis", "${MODULE_NAME}") in text
    top = (REPO / "CMakeLists.txt").read_text(encoding="utf-8")
    assert re.search(r'set\(EXTENSION_DEPENDS "PyTorch"\)', top)
    assert "add_subdirectory(JCSDiagnosis)" in top
    for key in ("HOMEPAGE", "CONTRIBUTORS", "DESCRIPTION", "ICONURL", "SCREENSHOTURLS", "CATEGORY"):
        assert re.search(rf'set\(EXTENSION_{key} "[^"]+"\)', top), key


def test_catalog_entry_fields():
    entries = {}
    for line in (REPO / "JCSDiagnosis.s4ext").read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.startswith("#"):
            key, _, value = line.partition(" ")
            entries[key] = value.strip()
    for key in (
        "scm",
        "scmurl",
        "scmrevision",
        "depends",
        "build_subdirectory",
        "homepage",
        "contributors",
        "category",
        "iconurl",
        "status",
        "description",
        "screenshoturls",
        "enabled",
    ):
        assert entries.get(key), key
    assert entries["depends"] == "PyTorch"


def test_icon_is_a_128_pixel_png():
    for icon in (
        MODULE_DIR / "Resources" / "Icons" / "JCSDiagnosis.png",
        REPO / "Resources" / "Icons" / "JCSDiagnosis.png",
    ):
        data = icon.read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n"
        width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
        assert (width, height) == (128, 128)


def test_terminology_file_is_valid_context():
    path = MODULE_DIR / "jcs" / "SegmentationCategoryTypeModifier-JCSDiagnosis.term.json"
    assert "${CMAKE_CURRENT_SOURCE_DIR}/jcs/*.term.json" in (MODULE_DIR / "CMakeLists.txt").read_text()
    context = json.loads(path.read_text(encoding="utf-8"))
    categories = context["SegmentationCodes"]["Category"]
    types = {(t["CodingSchemeDesignator"], t["CodeValue"]) for c in categories for t in c["Type"]}
    assert ("DCM", "112033") in types and ("SCT", "39607008") in types
    for category in categories:
        for segment_type in category["Type"]:
            assert len(segment_type["recommendedDisplayRGBValue"]) == 3


def test_engine_side_never_imports_gui_toolkits():
    for path in list((MODULE_DIR / "JCSDiagnosisLib").glob("*.py")) + list(
        (MODULE_DIR / "jcs").rglob("*.py")
    ):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            for name in names:
                assert name.split(".")[0] not in {"qt", "ctk", "PythonQt", "trame"}, f"{path}: {name}"
                if path.parent.name != "JCSDiagnosisLib":
                    assert name.split(".")[0] not in {"slicer", "vtk", "vtkmodules"}, f"{path}: {name}"


def test_python_packages_ship_their_data_files():
    """Every non-Python file inside an installable package matches its pyproject package-data glob,
    so a plain (non-editable) ``pip install .`` carries it."""
    tomllib = pytest.importorskip("tomllib")
    project = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
    package_data = project["tool"]["setuptools"]["package-data"]
    for package in ("jcs", "JCSDiagnosisLib", "JCSDiagnosisViewer"):
        root = MODULE_DIR / package
        data_files = [
            path.relative_to(root).as_posix()
            for path in root.rglob("*")
            if path.is_file() and path.suffix not in (".py", ".pyc") and "__pycache__" not in path.parts
        ]
        patterns = package_data.get(package, [])
        missing = [f for f in data_files if not any(fnmatch.fnmatch(f, p) for p in patterns)]
        assert not missing, f"{package}: not in package-data: {missing}"
