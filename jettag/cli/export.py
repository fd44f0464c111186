"""jettag-export: write a trained run or checkpoint as an ONNX model plus a JSON sidecar.

    jettag-export run_dir=outputs/2026-11-22/10-00-00                 # -> <run_dir>/model.onnx, model.json
    jettag-export ckpt_path=run/checkpoints/best.ckpt output=tagger.onnx opset=17

Inputs x (B, N, C), v (B, N, 4), mask (B, N), all float32, B and N dynamic; output `scores` (B, K)
softmax probabilities. The sidecar lists the features with their standardization, the classes and
the input layout. The export is checked against PyTorch with ONNX Runtime before it is kept.
"""

from __future__ import annotations

import logging
import sys
import warnings
from pathlib import Path

from omegaconf import DictConfig

from jettag.cli import hydra_app
from jettag.errors import ConfigError
from jettag.inference import checkpoint_of, load_trained


def default_output(checkpoint: Path) -> Path:
    """model.onnx in the checkpoint's run directory, else next to the checkpoint."""
    folder = checkpoint.parent
    return (folder.parent if folder.name == "checkpoints" else folder) / "model.onnx"


def quiet_exporter() -> None:
    """The exporter's graph passes log every step at INFO, which Hydra's logging shows."""
    for name in ("onnxscript", "onnx_ir", "torch.onnx"):
        logging.getLogger(name).setLevel(logging.WARNING)
    logging.getLogger("torch.onnx._internal.exporter._registration").setLevel(logging.ERROR)  # no torchvision
    warnings.filterwarnings("ignore", message=r".*The axis name: .* will not be used")


def export(cfg: DictConfig) -> float:
    from jettag.export import export_onnx

    quiet_exporter()
    checkpoint = checkpoint_of(cfg.run_dir, cfg.ckpt_path)
    trained = load_trained(checkpoint, cfg.get("features") or None)
    output = Path(cfg.output) if cfg.output else default_output(checkpoint)
    if output.suffix != ".onnx":
        raise ConfigError(
            f"output={output} should end in .onnx (the sidecar is written next to it as .json)."
        )
    if not isinstance(cfg.opset, int) or not 17 <= cfg.opset <= 23:
        raise ConfigError(
            f"opset={cfg.opset} is not supported; choose an ONNX opset from 17 to 23 (default 18)."
        )
    difference = export_onnx(trained, output, cfg.opset)
    print(f"jettag-export: wrote {output} and {output.with_suffix('.json')} ({type(trained.model).__name__}, "
          f"opset {cfg.opset}, classes {', '.join(trained.class_names)}); ONNX Runtime matches PyTorch "
          f"within {difference:.1e} on probe jets.", file=sys.stderr)  # fmt: skip
    return difference


main = hydra_app("export", "jettag-export")(export)

if __name__ == "__main__":
    main()
