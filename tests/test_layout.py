"""The package layout: model code stands alone, error types stand apart from the command line."""

from __future__ import annotations

import inspect
import json
import subprocess
import sys
from pathlib import Path

import jettag.errors
import jettag.models

# what model code must not pull in: the training framework, the configuration system, the CLI, tasks
FORBIDDEN = (
    "lightning",
    "pytorch_lightning",
    "hydra",
    "omegaconf",
    "jettag.cli",
    "jettag.tasks",
    "jettag.pipeline",
)
IMPORT_ALL_MODELS = """
import importlib, json, pkgutil, sys
import jettag.models
for info in pkgutil.walk_packages(jettag.models.__path__, "jettag.models."):
    importlib.import_module(info.name)
print(json.dumps(sorted(sys.modules)))
"""


def test_model_code_imports_no_lightning_hydra_or_cli():
    """Every module under jettag/models, imported in a fresh interpreter, loads none of FORBIDDEN."""
    out = subprocess.run(
        [sys.executable, "-c", IMPORT_ALL_MODELS], capture_output=True, text=True, check=True
    )
    modules = json.loads(out.stdout)
    assert "jettag.models.part.model" in modules and "jettag.models.weaver.load" in modules
    pulled = [m for m in modules if any(m == f or m.startswith(f + ".") for f in FORBIDDEN)]
    assert not pulled


def test_errors_module_holds_error_types_only():
    public = {name: value for name, value in vars(jettag.errors).items() if not name.startswith("_")}
    public.pop("annotations")  # from __future__
    assert public and all(inspect.isclass(v) and issubclass(v, Exception) for v in public.values()), public


def test_model_modules_are_small():
    root = Path(jettag.models.__file__).parent
    sizes = {str(p.relative_to(root)): len(p.read_text().splitlines()) for p in root.rglob("*.py")}
    assert "part/model.py" in sizes
    assert not {name: n for name, n in sizes.items() if n > 400}
