"""The documentation site builds with warnings as errors, and its generated pages are complete.

The site is built as docs/guide/install.md says (`sphinx-build -W --keep-going -b html docs DIR`), into
a temporary directory, with nothing fetched. The configuration reference must show every key of every
file of configs/ and every comment written in them; the API reference every module of jettag.
"""

from __future__ import annotations

import html
import importlib
import importlib.util
import inspect
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "docs" / "_ext"))
import jettag_docs  # noqa: E402


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    if importlib.util.find_spec("sphinx") is None:
        pytest.fail('Sphinx is missing: install the docs extra, pip install -e ".[docs]" (part of "test")')
    out = tmp_path_factory.mktemp("docs")
    result = subprocess.run(
        [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html",
         "-d", str(out / "doctrees"), "docs", str(out / "html")],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, f"the docs build warned or failed:\n{result.stderr[-5000:]}"
    return out / "html"


def test_config_reference_has_every_key_and_comment():
    reference = jettag_docs.config_reference()
    plain = " ".join(re.sub(r"\\(.)", r"\1", reference).split())
    configs = jettag_docs.load_configs()
    assert len(configs) == len(list((ROOT / "configs").rglob("*.yaml"))) > 30
    for config in configs:
        name = config.path.relative_to(ROOT).as_posix()
        assert f"`{name}`" in reference
        for key in jettag_docs.config_keys(config):
            assert f"`{key}`" in reference, f"{name}: {key}"
        for line in config.path.read_text().splitlines():
            comment = line.strip()
            if comment.startswith("#") and not comment.startswith("# @package"):
                text = " ".join(comment[1:].split())
                assert text in plain, f"{name}: comment not shown: {text}"


def test_config_keys_are_read_with_their_comments(tmp_path):
    configs = tmp_path / "configs"
    (configs / "data").mkdir(parents=True)
    (configs / "data" / "toy.yaml").write_text(
        "# A toy data config.\n"
        "defaults:\n  # the base\n  - base\n  - _self_\n\n"
        "files: [a.root]   # input files\n"
        "                  # (globs too)\n"
        "# rename inputs\nbranches: {}\n"
        "reweight:\n  mode: flat   # or balance\n  bins: {pt: [1, 2]}\n"
        "plugins:\n  - _target_: x.Y\n    flag: true   # a flag\n"
        "dotted:\n  task.optimizer.lr: tag(log, interval(1e-4, 1e-2))\n"
        "# about the keys below\n\nlate: 1\n# the end\n"
    )
    (config,) = jettag_docs.load_configs(configs)
    assert config.description == ["A toy data config.", "the end"]
    assert jettag_docs.config_keys(config) == [
        "data.files", "data.branches", "data.reweight.mode", "data.reweight.bins.pt",
        "data.plugins", "data.dotted.task.optimizer.lr", "data.late",
    ]  # fmt: skip
    entries = {entry.path: entry for entry in config.entries}
    assert entries[("files",)].comment == ["input files", "(globs too)"]
    assert entries[("branches",)].comment == ["rename inputs"] and entries[("branches",)].value == "{}"
    assert entries[("reweight", "mode")].comment == ["or balance"]
    assert entries[("plugins",)].comment == ["a flag"]
    assert entries[("late",)].comment == ["about the keys below"]
    assert entries[("defaults",)].items == [("base", ["the base"]), ("_self_", [])]
    reference = jettag_docs.config_reference(configs)
    assert "| `data.reweight.bins.pt` | `[1, 2]` |  |" in reference
    assert "| `data.files` | `[a.root]` | input files (globs too) |" in reference


def test_docstrings_render_as_written():
    lines = [
        "Pads |eta| < 2 jets, x * y, `a`s and `data.labels`.",
        "Two kinds:",
        "- one",
        "  continued",
        "- two",
        "After the list.",
        "    an indented example",
        "Back.",
    ]
    assert jettag_docs.plain_docstring(lines) == [
        r"Pads \|eta\| < 2 jets, x \* y, ``a``\ s and ``data.labels``.",
        "Two kinds:",
        "",
        "- one",
        "  continued",
        "- two",
        "",
        "After the list.",
        "",
        "::",
        "",
        "    an indented example",
        "",
        "Back.",
    ]


@pytest.mark.slow
def test_docs_build_without_warnings(site):
    for page in ("index", "guide/index", "guide/own-files", "performance", "changelog"):
        assert (site / f"{page}.html").is_file(), page
    # README links into docs/ resolve on the site's front page
    front = (site / "index.html").read_text()
    assert 'href="guide/own-files.html"' in front and 'href="reference/configuration.html"' in front
    # the generated references are complete
    configuration = html.unescape((site / "reference" / "configuration.html").read_text())
    for config in jettag_docs.load_configs():
        for key in jettag_docs.config_keys(config):
            assert f">{key}<" in configuration, key
    api = (site / "reference" / "api.html").read_text()
    for name in jettag_docs.public_modules():
        assert f'id="module-{name}"' in api, name
        module = importlib.import_module(name)
        for attr, obj in vars(module).items():  # every public class and function, where it is defined
            if not attr.startswith("_") and (inspect.isclass(obj) or inspect.isfunction(obj)):
                if getattr(obj, "__module__", None) == name:
                    assert f'id="{name}.{attr}"' in api, f"{name}.{attr}"
