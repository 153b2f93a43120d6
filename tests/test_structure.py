"""The package's shape: the engine imports without the app's libraries, no two modules import each other in a
cycle, and the CLI's training flags are TrainConfig's fields."""
import ast
import subprocess
import sys
from dataclasses import fields
from pathlib import Path

from nml_core.cli import build_parser
from nml_core.training.config import TrainConfig, option_fields

PACKAGE = Path(__file__).resolve().parent.parent / "nml_core"


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path, known: set[str]) -> set[str]:
    """nml_core modules imported anywhere in the file (top level or inside functions)."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            for alias in node.names:  # `from . import device` imports a module, `from .x import f` a name
                found.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
    return {m for m in found if m in known and m != name}


def test_no_import_cycles():
    files = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    known = set(files)
    graph = {m: imported_modules(p, known) - {m.rsplit(".", 1)[0]} for m, p in files.items()}
    # a package's __init__ importing nothing of its own: an edge to the parent package is not a cycle
    cycles = []

    def visit(node, stack):
        for nxt in graph[node]:
            if nxt in stack:
                cycles.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in done:
                visit(nxt, stack + [nxt])
        done.add(node)

    done: set[str] = set()
    for m in sorted(graph):
        if m not in done:
            visit(m, [m])
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)


# The layers of the README's code map, bottom up: a module imports only its own layer or lower ones. Every module
# and package is named: a new one must be placed here (there is no catch-all).
LAYERS = {"nml_core.errors": 0, "nml_core.device": 0, "nml_core.inputs": 0, "nml_core.files": 0, "nml_core.hub": 0,
          "nml_core.data": 1, "nml_core.arch": 1,
          "nml_core.store": 2, "nml_core.nesting": 2, "nml_core.training": 3, "nml_core.analysis": 4,
          "nml_core.api": 5, "nml_core.commands": 5, "nml_core.cli": 5, "nml_core.report": 5, "nml_core.jobs": 5,
          "nml_core.docs": 5, "nml_core.__main__": 5, "nml_core.app": 6}
ROOT = Path(__file__).resolve().parent.parent


def layer_of(module: str) -> int | None:
    """The layer of the longest entry in LAYERS that names the module or a package holding it."""
    hits = [p for p in LAYERS if module == p or module.startswith(p + ".")]
    return LAYERS[max(hits, key=len)] if hits else None


def package_of(module: str) -> str:
    """nml_core.store.runs -> nml_core.store; a top-level module is its own unit."""
    return ".".join(module.split(".")[:2])


def test_imports_point_down_the_layers_of_the_code_map():
    files = {module_name(p): p for p in PACKAGE.rglob("*.py") if module_name(p) != "nml_core"}
    assert all(layer_of(m) is not None for m in files), [m for m in files if layer_of(m) is None]
    upward = [f"{m} -> {i}" for m, p in sorted(files.items()) for i in imported_modules(p, set(files) | {"nml_core"})
              if i != "nml_core" and layer_of(i) > layer_of(m)]
    assert not upward, "imports that point up the layers: " + "; ".join(upward)
    readme = (ROOT / "README.md").read_text()
    assert "errors, device, inputs, files, hub" in readme and "| 2 | store, nesting |" in readme, \
        "the README states the same layers"


def test_no_two_packages_import_each_other():
    """A cycle between packages (store <-> data, say) is a cycle of the design even when no two modules form one."""
    files = {module_name(p): p for p in PACKAGE.rglob("*.py") if module_name(p) != "nml_core"}
    edges = {(package_of(m), package_of(i)) for m, p in files.items() for i in imported_modules(p, set(files))
             if package_of(i) != package_of(m)}
    both = sorted(f"{a} <-> {b}" for a, b in edges if (b, a) in edges and a < b)
    assert not both, both


def outside_imports(path: Path) -> set[str]:
    """The nml_core modules a file outside the package imports (from nml_core import x: nml_core.x)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("nml_core"):
            found |= {f"{node.module}.{a.name}" if node.module == "nml_core" else node.module for a in node.names}
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("nml_core")}
    return found


def test_pages_and_the_app_import_only_the_api_and_the_app_glue():
    for path in [ROOT / "app.py", *sorted((ROOT / "pages").glob("*.py"))]:
        bad = {m for m in outside_imports(path) if m != "nml_core.api" and not m.startswith("nml_core.app")}
        assert not bad, f"{path.name} imports {sorted(bad)}: pages read state, call nml_core.api, draw"


def test_bench_and_scripts_use_the_engine_not_the_app_nor_private_names():
    """bench/ measures the engine's parts, scripts/ drives the API: neither imports the app glue (streamlit),
    nor a module that does not exist, nor a name that is private to its module."""
    known = {module_name(p) for p in PACKAGE.rglob("*.py")}
    for path in sorted((ROOT / "bench").glob("*.py")) + sorted((ROOT / "scripts").glob("*.py")):
        for m in outside_imports(path):
            assert m in known and layer_of(m) != 6, f"{path.name} imports {m}"
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("nml_core"):
                private = [a.name for a in node.names if a.name.startswith("_")]
                assert not private, f"{path.name} imports private {private} from {node.module}"


def test_api_modules_and_functions_are_short():
    """The API split by job: each module at most 300 lines; no function in the package over 60 lines."""
    for path in (PACKAGE / "api").glob("*.py"):
        assert len(path.read_text().splitlines()) <= 300, path.name
    long = [f"{p.relative_to(ROOT)}:{n.name} ({n.end_lineno - n.lineno + 1} lines)"
            for p in PACKAGE.rglob("*.py") for n in ast.walk(ast.parse(p.read_text()))
            if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) and n.end_lineno - n.lineno + 1 > 60]
    assert not long, long


def test_engine_imports_without_streamlit_or_plotly():
    code = ("import sys\n"
            "for blocked in ('streamlit', 'plotly', 'pandas'): sys.modules[blocked] = None\n"
            "import nml_core.api, nml_core.cli, nml_core.commands, nml_core.report, nml_core.analysis.whatif, nml_core.analysis.profile, nml_core.jobs\n"
            "import nml_core.training.estimate, nml_core.analysis.generate\n"
            "print('ok')\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-2000:]


def test_only_the_app_package_imports_streamlit_or_plotly():
    for path in PACKAGE.rglob("*.py"):
        if "app" in path.relative_to(PACKAGE).parts[:1]:
            continue
        text = path.read_text()
        assert "import streamlit" not in text and "import plotly" not in text, path


def test_train_flags_are_the_config_fields():
    sub = build_parser()._subparsers._group_actions[0].choices
    train_flags = {a.dest for a in sub["train"]._actions}
    pretrain_flags = {a.dest for a in sub["pretrain"]._actions}
    assert {f.name for f in option_fields(("train", "kd"))} <= train_flags
    assert {f.name for f in option_fields(("train",))} <= pretrain_flags
    assert not {f.name for f in option_fields(("kd",))} & pretrain_flags
    # a recipe round-trips through its argv: the job's command line is the recipe
    cfg = TrainConfig(steps=7, lr=3e-4, strategy="sandwich", kd_source="cascade", temperature=3.0, device="cpu")
    args = sub["train"].parse_args(["--teacher", "t", "--out", "o"] + cfg.argv())
    assert {f.name: getattr(args, f.name) for f in option_fields()} == \
        {f.name: getattr(cfg, f.name) for f in fields(TrainConfig) if f.metadata.get("group")}


def test_every_command_but_list_takes_the_same_device_flag():
    """--device always says where to compute; the what-if names the hardware it projects for with --target."""
    sub = build_parser()._subparsers._group_actions[0].choices
    for name, parser in sub.items():
        device = [a for a in parser._actions if a.dest == "device"]
        if name in ("list", "render-docs", "whatif", "card"):  # they compute nothing on a device
            assert not device
            continue
        assert device and device[0].default == "auto" and list(device[0].choices) == ["auto", "cpu", "cuda"], name


def test_the_cuda_tests_collect_without_the_apps_packages():
    """A GPU machine may have no streamlit, plotly, pandas or playwright: `pytest -m cuda` still collects (the
    app's and the browser's tests skip) and runs the CUDA tests."""
    code = ("import sys\n"
            "for blocked in ('streamlit', 'plotly', 'pandas', 'playwright'): sys.modules[blocked] = None\n"
            "import pytest\n"
            "sys.exit(pytest.main(['-m', 'cuda', '--collect-only', '-q', '-p', 'no:cacheprovider', 'tests']))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=Path(__file__).resolve().parent.parent, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "error" not in done.stdout.lower().split("\n")[-2], done.stdout[-1000:]
