"""jettag: train, compare and deploy jet taggers on JetClass-style data.

From Python (see docs/guide/analysis.md):

    import jettag
    tagger = jettag.load("runs/mytop")          # a run directory, a checkpoint, or a published ParT file
    scores = tagger.predict(jets)               # one row of class scores per jet
    jettag.metrics.rejection(is_top, scores[:, 1], 0.5)

`load`, `Tagger` and `metrics` are imported when first used, so `import jettag` stays light.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"
__all__ = ["Tagger", "__version__", "load", "metrics"]

_LAZY = {"load": ("jettag.tagger", "load"), "Tagger": ("jettag.tagger", "Tagger")}


def __getattr__(name: str):
    if name in _LAZY:
        module, attribute = _LAZY[name]
        return getattr(importlib.import_module(module), attribute)
    if name == "metrics":
        return importlib.import_module("jettag.metrics")
    raise AttributeError(f"module 'jettag' has no attribute '{name}'")


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY, "metrics"])
