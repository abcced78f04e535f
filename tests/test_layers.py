"""The layers stay apart: importing any module of ``transforms/`` never loads Apache Beam, and no
package imports a package above it (the order is written in :data:`MAY_IMPORT`).

``transforms/`` is pure functions and small data classes; the Beam graph, its DoFns and combiners live
in ``pipelines/`` (docs/architecture.md). Each module is imported, one after another, in one fresh
interpreter that records the import chain at the moment ``apache_beam`` is first looked up, so a
failure names the module that pulled Beam in and the repository lines it came through.
"""

import ast
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# Runs in a fresh interpreter: imports the modules named in argv one by one and prints, as JSON, the
# first whose import loaded Beam (with the chain of repository lines that led to it), or null.
PROBE = r"""
import importlib, json, sys, traceback

root = sys.argv[1]
chain = []


class BeamSpy:
    def find_spec(self, name, path=None, target=None):
        if name == "apache_beam" and not chain:
            chain.extend(f"{frame.filename[len(root) + 1:]}:{frame.lineno}: {frame.line}"
                         for frame in traceback.extract_stack() if frame.filename.startswith(root + "/"))
        return None


sys.meta_path.insert(0, BeamSpy())
for name in sys.argv[2:]:
    importlib.import_module(name)
    if "apache_beam" in sys.modules:
        print(json.dumps({"module": name, "chain": chain}))
        break
else:
    print("null")
"""


def transforms_modules() -> list[str]:
    """Every module and package under transforms/, by dotted name, in path order."""
    names = []
    for path in sorted((ROOT / "transforms").rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        names.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return names


def first_beam_import(modules: list[str]) -> dict | None:
    done = subprocess.run(
        [sys.executable, "-c", PROBE, str(ROOT), *modules], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_no_transforms_module_loads_beam():
    modules = transforms_modules()
    assert "transforms.io" in modules and "transforms.sources.mimic" in modules and "transforms.tasks" in modules
    leak = first_beam_import(modules)
    assert leak is None, (
        f"importing {leak['module']} loads apache_beam, through:\n  "
        + "\n  ".join(leak["chain"])
        + "\nBeam belongs in pipelines/; import it inside the function that needs it "
        "(as transforms/io.py does) or move the Beam code there"
    )


def test_the_probe_sees_a_module_that_loads_beam():
    leak = first_beam_import(["transforms.hashing", "pipelines.beam.severity_fit"])
    assert leak["module"] == "pipelines.beam.severity_fit"
    assert any(line.startswith("pipelines/beam/severity_fit.py:") and "apache_beam" in line for line in leak["chain"])


MAY_IMPORT = {
    "manifests": set(),
    "schemas": {"manifests"},
    "transforms": {"manifests", "schemas"},
    "pipelines.output": {"manifests", "schemas", "transforms"},
    "pipelines.beam": {"manifests", "schemas", "transforms", "pipelines.output"},
    "pipelines.training": {"manifests", "schemas", "transforms", "pipelines.output"},
    "pipelines.synth": {"manifests", "schemas", "transforms", "pipelines.output", "pipelines.beam"},
    "pipelines.tools": {"manifests", "schemas", "transforms", "pipelines.output", "pipelines.beam"},
    "pipelines.cli": {
        "manifests",
        "schemas",
        "transforms",
        "pipelines.output",
        "pipelines.beam",
        "pipelines.synth",
        "pipelines.tools",
        "pipelines.training",
    },
}
"""Each layer -> the layers it may import (docs/architecture.md). ``pipelines.cli`` names its commands'
modules as strings (``COMMANDS``), so only its direct imports count."""


def layer_of(dotted: str) -> str | None:
    """``pipelines.beam.write`` -> ``pipelines.beam``; ``transforms.tasks.vqa`` -> ``transforms``."""
    parts = dotted.split(".")
    if parts[0] == "pipelines":
        return f"pipelines.{parts[1]}" if len(parts) > 1 else "pipelines"
    return parts[0] if parts[0] in MAY_IMPORT else None


def imported_names(node: ast.AST, package: str) -> list[str]:
    """The modules an import statement names, relative imports resolved against ``package``; for
    ``from pkg import a, b`` also ``pkg.a`` and ``pkg.b`` (they may be modules)."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if not isinstance(node, ast.ImportFrom):
        return []
    module = importlib.util.resolve_name("." * node.level + (node.module or ""), package) if node.level else node.module
    assert module is not None
    return [module, *(f"{module}.{alias.name}" for alias in node.names)]


def imports_across_layers() -> list[str]:
    """``file:line imports module`` for every import (top level or inside a function, absolute or
    relative) that goes against :data:`MAY_IMPORT`, and ``file: no row`` for a module of no layer."""
    wrong = []
    for top in ("manifests", "schemas", "transforms", "pipelines"):
        for path in sorted((ROOT / top).rglob("*.py")):
            relative = path.relative_to(ROOT)
            parts = relative.with_suffix("").parts
            dotted = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            package = dotted if parts[-1] == "__init__" else ".".join(parts[:-1])
            layer = layer_of(dotted)
            if dotted == "pipelines":
                continue
            if layer not in MAY_IMPORT:
                wrong.append(f"{relative}: no row in MAY_IMPORT")
                continue
            for node in ast.walk(ast.parse(path.read_text(), str(relative))):
                for name in imported_names(node, package):
                    target = layer_of(name)
                    if target in MAY_IMPORT and target != layer and target not in MAY_IMPORT[layer]:
                        wrong.append(f"{relative}:{node.lineno} imports {name}")
    return sorted(set(wrong))


def test_no_package_imports_a_layer_above_it():
    assert set(MAY_IMPORT) >= {
        layer_of(f"pipelines.{p.name}")
        for p in (ROOT / "pipelines").iterdir()
        if p.is_dir() and (p / "__init__.py").exists()
    }, "a new pipelines/ folder needs its row"
    assert imports_across_layers() == []


def test_the_layer_check_sees_upward_imports_and_modules_of_no_layer(tmp_path, monkeypatch):
    for package in ("manifests", "schemas", "transforms", "pipelines/output", "pipelines/beam"):
        (tmp_path / package).mkdir(parents=True)
    (tmp_path / "transforms" / "leak.py").write_text("def f():\n    from pipelines.beam import write\n")
    (tmp_path / "pipelines" / "output" / "up.py").write_text("from ..beam import write\nfrom . import paths\n")
    (tmp_path / "pipelines" / "stray.py").write_text("")
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    assert imports_across_layers() == [
        "pipelines/output/up.py:1 imports pipelines.beam",
        "pipelines/output/up.py:1 imports pipelines.beam.write",
        "pipelines/stray.py: no row in MAY_IMPORT",
        "transforms/leak.py:2 imports pipelines.beam",
        "transforms/leak.py:2 imports pipelines.beam.write",
    ]
