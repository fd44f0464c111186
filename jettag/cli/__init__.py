"""Command-line entry points. Hydra apps read their configs from jettag's `configs/` directory."""

from __future__ import annotations

import datetime
import functools
import logging
import warnings
from pathlib import Path

from jettag.cli.errors import exit_with_error
from jettag.errors import JetTagError
from jettag.paths import config_dir, sample_path


def _eval_dir(run_dir: str | None, ckpt_path: str | None) -> str:
    """Where jettag-eval writes: <run>/eval for a run (or a checkpoint inside one), else outputs/eval/<time>."""
    if run_dir:
        return str(Path(run_dir) / "eval")
    if ckpt_path and Path(ckpt_path).parent.name == "checkpoints":
        return str(Path(ckpt_path).parent.parent / "eval")
    return f"outputs/eval/{datetime.datetime.now():%Y-%m-%d/%H-%M-%S}"


# Lightning chatter that tells a user nothing about their run.
_QUIET_PREFIXES = ("💡 Tip", "`Trainer(limit_", "`Trainer(val_check_interval", "Loading `train_dataloader`")


class _QuietLightning(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(_QUIET_PREFIXES)


def quiet_libraries() -> None:
    logging.getLogger("lightning.pytorch.utilities.rank_zero").addFilter(_QuietLightning())
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)")
    warnings.filterwarnings("ignore", message=r".*smaller than the logging interval")
    warnings.filterwarnings("ignore", message=r".*does not have many workers")
    # jettag.tasks.resume.ResumeBatchPosition makes mid-epoch resumption exact
    warnings.filterwarnings(
        "ignore", message=r".*ended before the epoch ended and your dataloader is not resumable"
    )


def register_resolvers() -> None:
    from omegaconf import OmegaConf  # here, not at the top: jettag-generate and jettag-convert need no Hydra

    if not OmegaConf.has_resolver("jettag.sample"):
        OmegaConf.register_new_resolver("jettag.sample", lambda name: str(sample_path(name)))
    if not OmegaConf.has_resolver("jettag.eval_dir"):
        OmegaConf.register_new_resolver("jettag.eval_dir", _eval_dir)


def hydra_app(config_name: str, prog: str):
    """A Hydra entry point on jettag's configs that reports user errors in one sentence (exit 2)."""
    import hydra
    from omegaconf.errors import MissingMandatoryValue

    register_resolvers()
    quiet_libraries()

    def decorate(task):
        @hydra.main(config_path=str(config_dir()), config_name=config_name, version_base="1.3")
        @functools.wraps(task)
        def main(cfg):
            try:
                return task(cfg)
            except JetTagError as err:
                exit_with_error(prog, err)
            except MissingMandatoryValue as err:
                exit_with_error(
                    prog, f"{err.full_key} is not set; pass {err.full_key}=... on the command line."
                )

        return main

    return decorate
