"""Command-line entry points. Hydra apps read their configs from jettag's `configs/` directory."""

from __future__ import annotations

import datetime
import functools
import logging
import re
import sys
import warnings
from pathlib import Path

from jettag.cli.errors import exit_with_error
from jettag.errors import JetTagError
from jettag.paths import config_dir, sample_path
from jettag.threads import passive_waits

passive_waits()  # before anything imports torch: libgomp reads OMP_WAIT_POLICY when it is loaded


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


# Keys that were spelled differently before (issue 14), per command: the key that replaces them. The
# device and precision are Lightning's Trainer arguments in every command; the batch that jettag-eval
# and jettag-predict score is data.eval_batch_size, as in training's validation and test.
def _renamed(batch_size: str) -> dict[str, str]:
    trainer = {key: f"trainer.{key}" for key in ("accelerator", "devices", "precision")}
    return {**trainer, "device": "trainer.accelerator", "batch_size": batch_size,
            "data.skip_bad_files": "data.on_bad_file"}  # fmt: skip


RENAMED_KEYS = {
    "jettag-train": _renamed("data.batch_size"),
    "jettag-eval": {**_renamed("data.eval_batch_size"), "data.batch_size": "data.eval_batch_size"},
    "jettag-predict": {**_renamed("data.eval_batch_size"), "data.batch_size": "data.eval_batch_size"},
}


def _device_overrides(device: str) -> str:
    """A torch device string (jettag-predict's old device=...) as trainer.accelerator and trainer.devices."""
    kind, _, index = device.partition(":")
    accelerator = {"cuda": "gpu"}.get(kind, kind)
    return f"trainer.accelerator={accelerator}" + (f" trainer.devices=[{index}]" if index else "")


def renamed_key_error(prog: str, args: list[str]) -> str | None:
    """The sentence that answers the first old spelling of a key among the command-line `args`, if any."""
    renamed = RENAMED_KEYS.get(prog, {})
    for arg in args:
        match = re.fullmatch(r"(?:\+\+|\+|~)?([\w.]+)=(.*)", arg, re.S)
        if arg.startswith("-") or not match or match.group(1) not in renamed:
            continue
        key, value = match.groups()
        if key == "data.batch_size":
            return (
                f"data.batch_size is the training batch size; {prog} scores jets in batches of "
                f"data.eval_batch_size, e.g. data.eval_batch_size={value}."
            )
        if key == "data.skip_bad_files":
            choice = "skip" if value.strip().lower() in ("true", "1", "yes", "on") else "error"
            return f"{arg} is now written data.on_bad_file={choice} (error or skip)."
        spelled = (
            _device_overrides(value) if key == "device" and "," not in value else f"{renamed[key]}={value}"
        )
        return f"{arg} is written {spelled} (the same key in every jettag command)."
    return None


def unknown_option_error(args: list[str], configs: Path | None = None) -> str | None:
    """The sentence for the first `group=name` among `args` whose group has no config `name` (Hydra
    answers with many lines: the search path and a stack-trace hint); None when all are known, or when
    the user adds config directories of their own (`--config-dir`, `hydra.searchpath`)."""
    configs = configs or config_dir()
    if any(a.startswith(("--config-dir", "-cd", "hydra.searchpath")) for a in args):
        return None
    for arg in args:
        match = re.fullmatch(r"(?:\+\+|\+)?([A-Za-z_]\w*)=(.*)", arg, re.S)
        if arg.startswith("-") or not match or not (configs / match.group(1)).is_dir():
            continue
        group, value = match.groups()
        options = sorted(p.stem for p in (configs / group).glob("*.yaml"))
        names = [n.strip() for n in value.strip().strip("[]").split(",") if n.strip()]
        for name in names:
            if name not in options and name != "null":
                what = {"features": "feature set", "callbacks": "callback set"}.get(group, group)
                return (
                    f"{group}={value}: jettag has no {what} '{name}'; choose one of {', '.join(options)} "
                    f"(the configs in {configs / group})."
                )
    return None


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

        @functools.wraps(task)
        def entry(cfg=None):
            # before Hydra, which would reject an old key with its own message and no pointer to the new one
            error = (
                (renamed_key_error(prog, sys.argv[1:]) or unknown_option_error(sys.argv[1:]))
                if cfg is None
                else None
            )
            if error:
                print(f"{prog}: error: {error}", file=sys.stderr)
                sys.exit(2)
            return main(cfg)

        return entry

    return decorate
