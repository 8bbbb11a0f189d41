"""The package's import DAG (pyproject.toml [tool.importlinter], docs/ARCHITECTURE.md) holds, and is live: an
upward import injected into a copy of the package breaks it."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
LINT = Path(sys.executable).with_name("lint-imports")
LAYERS_BROKEN = "layers: the import DAG, commands on top, errors at the bottom BROKEN"


def _lint(root: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(LINT), "--config", str(root / "pyproject.toml"), "--no-cache"], cwd=root,
                          capture_output=True, text=True, timeout=120, env={"PYTHONPATH": str(root), "PATH": ""})


def test_the_import_contracts_are_kept():
    out = _lint(REPO)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-2000:]
    assert "Contracts: 3 kept, 0 broken." in out.stdout


def _inject(tmp_path: Path, module: str, line: str) -> subprocess.CompletedProcess:
    shutil.copytree(REPO / "dmfnet_edge", tmp_path / "dmfnet_edge",
                    ignore=shutil.ignore_patterns("__pycache__", "*.onnx", "*.safetensors", "samples"))
    shutil.copy(REPO / "pyproject.toml", tmp_path)
    target = tmp_path / "dmfnet_edge" / module
    target.write_text(target.read_text() + f"\n{line}  # noqa: E402 (injected)\n")
    return _lint(tmp_path)


def test_an_upward_import_breaks_the_layers(tmp_path):
    out = _inject(tmp_path, "preprocess/tensor.py", "from dmfnet_edge.runtime import base")
    assert out.returncode == 1
    assert LAYERS_BROKEN in out.stdout
    assert "dmfnet_edge.preprocess.tensor -> dmfnet_edge.runtime.base" in out.stdout


def test_an_import_between_siblings_of_one_layer_breaks_it(tmp_path):
    """export and build share a layer but may not import each other (that is how the old cycle grew)."""
    out = _inject(tmp_path, "export/calibration.py", "from dmfnet_edge.engines import precision")
    assert out.returncode == 1
    assert LAYERS_BROKEN in out.stdout
    assert "dmfnet_edge.export.calibration -> dmfnet_edge.engines.precision" in out.stdout


# ---- imports the contracts cannot see: require() and importlib ---------------------------------------------------
import ast  # noqa: E402

import tomllib  # noqa: E402

PACKAGE = REPO / "dmfnet_edge"
STRING_TABLES = {"dmfnet_edge/cli/registry.py", "dmfnet_edge/records/__init__.py"}  # lazy tables of module names


def dynamic_imports(source: str) -> list[tuple[str, str, bool]]:
    """(how, module, at module level) of every require("...") and importlib.import_module("...") call with a
    literal module name, and every require() at module level (which loads the package when the module loads)."""
    tree = ast.parse(source)
    top_level = {id(n) for stmt in tree.body for n in ast.walk(stmt)
                 if not isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))}
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call) or not node.args:
            continue
        name = ast.unparse(node.func)
        if name.endswith(("require", "import_module")):
            arg = node.args[0]
            module = arg.value if isinstance(arg, ast.Constant) and isinstance(arg.value, str) else "<computed>"
            found.append((name.rpartition(".")[2], module, id(node) in top_level))
    return found


def dynamic_import_problems(source: str, path: str) -> list[str]:
    problems = []
    for how, module, top in dynamic_imports(source):
        if module.split(".")[0] == "dmfnet_edge" and path not in STRING_TABLES:
            problems.append(f"{path}: {how}({module!r}) hides a package import from the contracts; import it")
        if how == "require" and top:
            problems.append(f"{path}: require({module!r}) at module level loads it with the module; call it where "
                            "it is used")
    return problems


def test_no_import_hides_from_the_contracts():
    problems = []
    for path in PACKAGE.rglob("*.py"):
        rel = str(path.relative_to(REPO))
        problems += dynamic_import_problems(path.read_text(), rel)
    assert problems == []


@pytest.mark.parametrize("source", [
    'from dmfnet_edge._optional import require\ntorch = require("torch")\n',  # module-level: loads torch
    'def f():\n    require("dmfnet_edge.cli.main")\n',  # an upward import the contracts cannot see
    'import importlib\ndef f():\n    importlib.import_module("dmfnet_edge.cli.main")\n',
])
def test_the_scan_sees_hidden_imports(source):
    assert dynamic_import_problems(source, "dmfnet_edge/pipeline.py")


def test_every_extra_named_in_the_code_exists():
    extras = set(tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"])
    from dmfnet_edge._optional import _EXTRAS

    named = {extra for extra, _ in _EXTRAS.values()}
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and ast.unparse(node.func).endswith("require"):
                named |= {k.value.value for k in node.keywords
                          if k.arg == "extra" and isinstance(k.value, ast.Constant)}
    assert named - extras == set(), f"extras named in the code but not in pyproject.toml: {named - extras}"
