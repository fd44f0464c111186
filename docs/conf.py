"""Sphinx configuration of jettag's documentation: `sphinx-build -W docs docs/_build` (see docs/index.md)."""

from __future__ import annotations

import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent
sys.path.insert(0, str(DOCS / "_ext"))
sys.path.insert(0, str(DOCS.parent))  # the checkout's jettag, also without an install

import jettag  # noqa: E402

project = "jettag"
author = "jettag developers"
copyright = "jettag developers"
release = version = jettag.__version__

extensions = [
    "myst_parser",  # pages in Markdown (MyST), as README.md
    "sphinx.ext.autodoc",  # the API reference from the docstrings
    "jettag_docs",  # the generated pages: configuration reference (configs/*.yaml), API reference
]
source_suffix = {".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build", "_ext", "Thumbs.db", ".DS_Store"]

# MyST: anchors for headings (links such as guide/own-files.md#large-data-sets), definition lists
myst_heading_anchors = 3
myst_enable_extensions = ["deflist"]

# autodoc: docstrings are reST; `x` is code, as in Markdown
default_role = "code"
autodoc_member_order = "bysource"
autodoc_typehints = "signature"
autodoc_default_options = {"show-inheritance": False}
add_module_names = False

html_theme = "furo"
html_title = f"jettag {release}"
html_static_path: list[str] = []
# nothing is fetched at build time: no intersphinx, no remote images
autodoc_inherit_docstrings = False  # Lightning's long docstrings are not jettag's
smartquotes = False  # comments and docstrings quote code ("jet_pt > 500"): keep straight quotes
