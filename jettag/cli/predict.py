"""jettag-predict: score jets without labels with a trained run or checkpoint.

    jettag-predict run_dir=runs/mytop files='[data/a.root, data/more/*.root]' output=scores.root
    jettag-predict ckpt_path=best.ckpt files='[jets.root]' data.treename=Events data.observers='[jet_pt]'

Writes tree `Events` with one row per input jet, files in the order given: `score_<class>` per
class, the observers, and `entry` (the jet's entry in its input file), so the output is a friend
tree of the inputs' TChain. Jets without particles (or with non-finite inputs, when
data.drop_nonfinite_jets=true) keep their row with NaN scores. Files are read chunk by chunk.
The device and precision are Lightning's, as in jettag-train: trainer.accelerator=gpu
trainer.devices=[1] (GPU 1), trainer.precision=bf16-mixed, trainer=gpu; batches of data.eval_batch_size.
"""

from __future__ import annotations

import sys

from omegaconf import DictConfig

from jettag.cli import hydra_app
from jettag.inference import checkpoint_of, load_trained, predict_files, scoring_fabric
from jettag.pipeline import with_run_data


def predict(cfg: DictConfig) -> int:
    fabric = scoring_fabric(cfg.trainer.accelerator, cfg.trainer.devices, cfg.trainer.precision)
    trained = load_trained(checkpoint_of(cfg.run_dir, cfg.ckpt_path), cfg.get("features") or None)
    data = with_run_data(trained.config["data"], cfg.data)
    files = cfg.files if isinstance(cfg.files, str) else list(cfg.files or [])
    summary = predict_files(
        trained,
        files,
        cfg.output,
        treename=data["treename"],
        observers=list(data.get("observers") or []),
        branches=data.get("branches") or {},
        chunk_size=int(data.get("chunk_size") or 10_000),
        # the run's evaluation batch (None: its training batch, as in jettag-train); 1024 for weaver-core files
        batch_size=int(data.get("eval_batch_size") or data.get("batch_size") or 1024),
        drop_nonfinite=bool(data.get("drop_nonfinite_jets", False)),
        drop_unphysical=bool(data.get("drop_unphysical_jets", False)),
        fabric=fabric,
        progress=bool(cfg.progress),
        new_variables=data.get("new_variables") or {},
    )
    skipped = "".join(
        f", {n} with NaN scores ({why.replace('_', ' ')})" for why, n in summary.skipped.items()
    )
    print(f"jettag-predict: scored {summary.scored} of {summary.jets} jets from {len(summary.files)} file(s) "
          f"on {fabric.device}{skipped}; wrote {cfg.output} (tree Events).", file=sys.stderr)  # fmt: skip
    return summary.jets


main = hydra_app("predict", "jettag-predict")(predict)

if __name__ == "__main__":
    main()
