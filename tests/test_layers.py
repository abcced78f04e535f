"""The layers stay apart: importing any module of ``transforms/`` never loads Apache Beam.

``transforms/`` is pure functions and small data classes; the Beam graph, its DoFns and combiners live
in ``pipelines/`` (docs/architecture.md). Each module is imported, one after another, in one fresh
interpreter that records the import chain at the moment ``apache_beam`` is first looked up, so a
failure names the module that pulled Beam in and the repository lines it came through.
"""

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
