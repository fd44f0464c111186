"""The Dockerfile installs jettag exactly as the README's set-up command does (docker itself is not run)."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def readme_setup_steps() -> list[str]:
    first = re.search(r"```bash\n(.*?)```", (ROOT / "README.md").read_text(), re.S).group(1)
    setup = next(line for line in first.splitlines() if line and not line.startswith("#"))
    return [step.strip() for step in setup.split("&&")]


def dockerfile() -> list[tuple[str, str]]:
    """(instruction, arguments) of each Dockerfile line, continuation lines joined."""
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    return [tuple(line.split(None, 1)) for line in lines]


def test_dockerfile_installs_as_the_readme_does():
    steps = readme_setup_steps()
    venv, activate, torch, *package = steps
    assert venv.startswith("python -m venv") and activate.startswith(". ")
    assert shlex.split(torch) == ["pip", "install", "torch==2.13.0"] and package
    instructions = dockerfile()
    runs = [args for op, args in instructions if op == "RUN"]
    # the README's package installs, verbatim, in order; torch comes from the CUDA PyTorch base image
    assert [shlex.split(r) for r in runs] == [shlex.split(p) for p in package]
    (base,) = [args for op, args in instructions if op == "FROM"]
    assert base.startswith("pytorch/pytorch:") and "cuda" in base
    # everything the editable install builds from is in the image
    copied = {src for op, args in instructions if op == "COPY" for src in args.split()[:-1]}
    assert {"pyproject.toml", "README.md", "jettag", "configs"} <= copied
    assert ("ENTRYPOINT", '["jettag-train"]') in instructions


def test_readme_shows_the_container_with_gpus_and_a_data_mount():
    # the README and the docs pages (the container is shown in docs/guide/clusters.md)
    pages = [ROOT / "README.md", *(ROOT / "docs").rglob("*.md")]
    readme = "\n".join(page.read_text() for page in pages if "_build" not in page.parts)
    assert re.search(r"docker run --gpus all [^\n]*-v [^\n]*:/data", readme)
    assert "docker build -t jettag ." in readme
