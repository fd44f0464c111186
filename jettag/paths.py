"""Where jettag finds its Hydra configs and the generated sample it ships with."""

from __future__ import annotations

from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
SAMPLE_DIR = PACKAGE_DIR / "samples"


def config_dir() -> Path:
    """The `configs/` directory: inside the package when installed from a wheel, else the repo's."""
    for candidate in (PACKAGE_DIR / "configs", PACKAGE_DIR.parent / "configs"):
        if (candidate / "train.yaml").is_file():
            return candidate
    raise FileNotFoundError(
        f"jettag's configs/ directory was found neither in {PACKAGE_DIR} nor next to it; reinstall jettag."
    )


def sample_path(name: str) -> Path:
    """Absolute path of a file of the embedded sample, e.g. `sample_path("top_qcd_train.root")`."""
    return SAMPLE_DIR / name
