"""The usage examples of the README and of the docs pages run as written (with tiny sizes and one or two
batches).

Each ```bash block preceded by `<!-- readme-test: NAME -->`, in README.md or a page under docs/, is run
command by command, in one working directory (each such ```python block as one script there, after the
bash examples it builds on), where the files the examples name (top/*.parquet,
JetClass/...) are toy files; the blocks run in the order they first appear, README first, then the docs
pages by path. A block shown in several pages (the README's tour repeats the guide's) is written the
same everywhere and runs once. The only changes: `-n N` becomes a few jets, and jettag-train gets
overrides that stop after one or two batches.
"""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import JETCLASS_LABELS, top_tagging_table, toy_jets, write_parquet, write_root

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
PAGES = [README, *sorted(p for p in (ROOT / "docs").rglob("*.md") if "_build" not in p.parts)]
MARKED = re.compile(r"<!-- readme-test: (\S+) -->\s*```bash\n(.*?)```", re.S)
MARKED_PYTHON = re.compile(r"<!-- readme-test: (\S+) -->\s*```python\n(.*?)```", re.S)
FAST = ["trainer.max_epochs=1", "trainer.limit_train_batches=2", "trainer.limit_val_batches=2",
        "trainer.accelerator=cpu", "data.batch_size=16"]  # fmt: skip


def marked_blocks(pattern: re.Pattern = MARKED) -> dict[str, dict[Path, str]]:
    """name -> {page: the block's text}, names in the order they first appear."""
    found: dict[str, dict[Path, str]] = {}
    for page in PAGES:
        for match in pattern.finditer(page.read_text()):
            found.setdefault(match.group(1), {})[page] = match.group(2)
    return found


def readme_blocks() -> list[tuple[str, list[list[str]]]]:
    blocks = []
    for name, texts in marked_blocks().items():
        joined = next(iter(texts.values())).replace("\\\n", " ")
        commands = [shlex.split(line, comments=True) for line in joined.splitlines()]
        blocks.append((name, [c for c in commands if c]))
    return blocks


BLOCKS = readme_blocks()


def test_readme_has_tested_blocks_and_three_commands():
    assert [name for name, _ in BLOCKS] == [
        "own-files",
        "models",
        "report",
        "deploy",
        "generate",
        "experiments",
        "data",
    ]
    first = re.search(r"```bash\n(.*?)```", README.read_text(), re.S).group(1)
    commands = [line for line in first.splitlines() if line and not line.startswith("#")]
    assert commands[1:] == ["jettag-train", "pytest"]
    assert "pip install torch==2.13.0" in commands[0]
    # CI runs exactly the README's set-up and test commands
    ci = (README.parent / ".ci" / "run").read_text()
    assert commands[0] in ci and "\npytest" in ci


PYTHON_BLOCKS = {name: next(iter(texts.values())) for name, texts in marked_blocks(MARKED_PYTHON).items()}


def test_tested_blocks_are_in_the_guide_and_the_same_everywhere():
    assert list(PYTHON_BLOCKS) == ["analysis", "analysis-dask", "analysis-coffea"]
    for name, texts in [*marked_blocks().items(), *marked_blocks(MARKED_PYTHON).items()]:
        # the guide holds every tested example; the README's tour shows some of them again
        assert any(page != README for page in texts), f"{name}: only in the README"
        assert len(set(texts.values())) == 1, f"{name} differs between {[str(p) for p in texts]}"


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    base = tmp_path_factory.mktemp("readme")
    (base / "top").mkdir()
    for i, split in enumerate(("train", "val", "test")):
        write_parquet(base / "top" / f"{split}_file.parquet", toy_jets(120, seed=40 + i))
    for i, split in enumerate(("train", "val", "test")):  # small stand-ins for the shipped sample
        write_root(base / "top" / f"sample_{split}.root", toy_jets(100, seed=45 + i))
    for i, split in enumerate(("train_100M", "val_5M", "test_20M")):
        (base / "JetClass" / split).mkdir(parents=True)
        write_root(
            base / "JetClass" / split / "part0.root", toy_jets(150, seed=50 + i, classes=JETCLASS_LABELS)
        )
    # per-class files without label branches, as JetClass ships them
    (base / "JetClass" / "groups").mkdir()
    for name, label in (("ZJetsToNuNu", "label_QCD"), ("HToBB", "label_Hbb")):
        jets = toy_jets(100, seed=60 + len(name), classes=(label,))
        write_root(base / "JetClass" / "groups" / f"{name}_0.root",
                   {k: v for k, v in jets.items() if not k.startswith("label_")})  # fmt: skip
    # the original top-tagging HDF5 table: E_i PX_i PY_i PZ_i (zero-padded), is_signal_new
    frame = top_tagging_table(60, seed=70, slots=80)
    frame.to_hdf(base / "top" / "train.h5", key="table", mode="w")
    return base


def adapt(command: list[str], workdir: Path, index: int) -> list[str]:
    prog, *args = command
    if prog == "python":  # scripts/... are the repository's; the examples run them from its root
        return [sys.executable, *(str(ROOT / a) if a.startswith("scripts/") else a for a in args)]
    exe = str(Path(sys.executable).parent / prog)
    if prog == "jettag-generate":
        args = [("30" if i and args[i - 1] in ("-n", "--jets-per-class") else a) for i, a in enumerate(args)]
    if prog == "jettag-train":
        shipped_sample = not any(a.startswith("data.") for a in args)
        args = [*args, *FAST]
        if shipped_sample:  # the shipped sample -> 100 toy jets per split
            args += [
                f"data.{split}_files=[{workdir}/top/sample_{split}.root]"
                for split in ("train", "val", "test")
            ]
        if not any(a.startswith("hydra.run.dir=") for a in args):
            args.append(f"hydra.run.dir=runs/cmd{index}")
    return [exe, *args]


@pytest.mark.slow
@pytest.mark.parametrize("name, commands", BLOCKS, ids=[name for name, _ in BLOCKS])
def test_readme_example_runs(name, commands, workdir):
    for index, command in enumerate(commands):
        result = subprocess.run(adapt(command, workdir, index), cwd=workdir, capture_output=True, text=True,
                                timeout=600, env={**__import__("os").environ, "MPLBACKEND": "Agg"})  # fmt: skip
        assert result.returncode == 0, f"{shlex.join(command)}\n{result.stderr[-3000:]}"
    if name == "models":
        runs = [p.parent for p in (workdir / "runs" / "baselines").glob("*/metrics.json")]
        assert len(runs) == 4
    if name == "deploy":
        assert (workdir / "runs" / "mytop" / "model.onnx").is_file() and (workdir / "scores.root").is_file()
    if name == "data":
        assert (workdir / "top" / "train_converted.parquet").is_file()
        run = workdir / "runs" / "groups"
        for output in ("standardization.json", "reweighting.png", "reweighting.json", "metrics.json"):
            assert (run / output).is_file(), output
    if name == "report":
        table = (workdir / "runs" / "baselines" / "comparison.md").read_text()
        assert all(f"| {model} | 1 |" in table for model in ("part_plain", "particlenet", "pfn", "pcnn"))
    if name == "own-files":
        for run in ("runs/mytop", "runs/mytop/eval", "runs/mytop-eval"):
            assert (workdir / run / "metrics.json").is_file(), run


@pytest.mark.slow
@pytest.mark.parametrize("name", list(PYTHON_BLOCKS))
def test_python_example_runs(name, workdir):
    """The Python examples (a tagger in an analysis) need the run and the scores of the README's
    own-files and deploy examples: run those first where this test runs alone."""
    if not (workdir / "scores.root").is_file():
        for block in ("own-files", "deploy"):
            test_readme_example_runs(block, dict(BLOCKS)[block], workdir)
    result = subprocess.run([sys.executable, "-c", PYTHON_BLOCKS[name]], cwd=workdir, capture_output=True,
                            text=True, timeout=600)  # fmt: skip
    assert result.returncode == 0, f"{name}:\n{result.stderr[-3000:]}"
