"""A trained tagger applied to jets without labels: load a run, score files chunk by chunk.

`load_trained` rebuilds the feature set and the network of a `jettag-train` checkpoint (no Lightning
needed); `predict_files` streams input files through it and writes one row per input jet, in file
order, so the output lines up with the input files as a friend tree. Memory is bounded by the
chunk size, not by the file size.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import awkward as ak
import numpy as np
import torch
import uproot
from torch import nn

from jettag.checkpoint import RunRecord, is_jettag_checkpoint, model_state, read_torch_file
from jettag.data.dataset import JetDataset
from jettag.data.expressions import parse_new_variables
from jettag.data.jets import JetBuilder
from jettag.data.reader import resolve_files
from jettag.data.source import JetSource
from jettag.errors import ConfigError
from jettag.features.sets import FeatureSet
from jettag.jetclass import JETCLASS_LABELS
from jettag.models.base import class_scores
from jettag.models.weaver.state import weaver_num_classes
from jettag.paths import config_dir
from jettag.pipeline import build_features, build_model

if TYPE_CHECKING:
    from lightning.fabric import Fabric


@dataclass
class TrainedModel:
    """The network of a training run in eval mode, with what is needed to feed it."""

    model: nn.Module
    features: FeatureSet
    class_names: list[str]
    background: int
    config: dict  # the resolved training configuration
    checkpoint: Path


def checkpoint_of(run_dir: str | None, ckpt_path: str | None) -> Path:
    """The checkpoint named by `ckpt_path`, else `<run_dir>/checkpoints/best.ckpt`."""
    if ckpt_path:
        return Path(ckpt_path)
    if run_dir:
        path = Path(run_dir) / "checkpoints" / "best.ckpt"
        if not path.is_file():
            raise ConfigError(
                f"run_dir: '{run_dir}' has no checkpoints/best.ckpt; is it a jettag-train run directory?"
            )
        return path
    raise ConfigError(
        "give the trained run, run_dir=<training run directory>, or a checkpoint, ckpt_path=<file>."
    )


def load_trained(path: str | Path, features: str | Mapping | None = None) -> TrainedModel:
    """The network of a jettag checkpoint, or of a weaver-core ParT / ParticleNet file (e.g. the published
    ParT_kinpid.pt) with its feature set: `features` (a name of configs/features, kin, kinpid or full, or
    a feature-set config) or, by default, the published set of the file's input size. A jettag
    checkpoint carries its own feature list."""
    content = read_torch_file(path)
    if not is_jettag_checkpoint(content):
        return _load_weaver_file(content, Path(path), features)
    if features is not None:
        raise ConfigError(
            f"features is for weaver-core files; '{path}' is a jettag checkpoint, which carries "
            "its own feature list: leave features unset."
        )
    record = RunRecord.read(content)
    if not record.config:
        raise ConfigError(
            f"'{path}' does not hold its training configuration; use a checkpoint written by jettag-train."
        )
    feature_set = build_features(record.section("features"))
    # the checkpoint holds the weights: a `weights` file the run started from is not needed
    model = build_model(
        record.section("model"), feature_set.num_features, len(record.class_names), load_weights=False,
        feature_names=feature_set.names,
    )  # fmt: skip
    model.load_state_dict(model_state(content))
    return TrainedModel(
        model.eval(), feature_set, record.class_names, record.background, record.config, Path(path)
    )


# the feature set of a weaver-core file, by its input size (the published JetClass models)
FEATURES_BY_SIZE = {7: "kin", 13: "kinpid", 17: "full"}


def _load_weaver_file(content, path: Path, features: str | None) -> TrainedModel:
    from jettag.models.weaver import load_weaver_weights, model_config, read_weaver_state_dict

    name = f"'{path}'"
    if not isinstance(content, Mapping) or not all(isinstance(v, torch.Tensor) for v in content.values()):
        raise ConfigError(
            f"{name} is neither a jettag checkpoint nor a weaver-core state dict; give a checkpoint of "
            "jettag-train or a published ParT / ParticleNet file."
        )
    state, _ = read_weaver_state_dict(content)
    model_cfg = model_config(state, name)
    input_bn = state.get("embed.input_bn.weight", state.get("bn_fts.weight"))
    size = int(input_bn.shape[0]) if input_bn is not None else None
    features = features or FEATURES_BY_SIZE.get(size)
    if features is None:
        raise ConfigError(
            f"{name} takes {size} input features, not a published set (kin 7, kinpid 13, full 17); "
            "name its feature set with features=<kin|kinpid|full>."
        )
    feature_set = shipped_features(features) if isinstance(features, str) else build_features(features)
    if feature_set.num_features != size:
        raise ConfigError(
            f"{name} takes {size} input features but features={feature_set.name} has {feature_set.num_features}; "
            f"use features={FEATURES_BY_SIZE.get(size, '...')}."
        )
    num_classes = weaver_num_classes(state)
    labels = list(JETCLASS_LABELS) if num_classes == len(JETCLASS_LABELS) else None
    class_names = labels or [f"class{i}" for i in range(num_classes)]
    model = build_model(model_cfg, feature_set.num_features, num_classes, feature_names=feature_set.names)
    load_weaver_weights(model, state, key="ckpt_path")
    config = {
        "model": model_cfg,
        "features": feature_set.to_config(),
        "data": {"treename": "tree", "labels": labels, "observers": [], "branches": {}},
        "source": f"weaver-core file {path}",
    }
    return TrainedModel(model.eval(), feature_set, class_names, 0, config, path)


def shipped_features(name: str) -> FeatureSet:
    """A feature set of configs/features by name."""
    from omegaconf import OmegaConf

    file = config_dir() / "features" / f"{name}.yaml"
    if not file.is_file():
        known = ", ".join(sorted(p.stem for p in file.parent.glob("*.yaml")))
        raise ConfigError(f"features={name} is not a feature set of jettag; choose from {known}.")
    return build_features(OmegaConf.to_container(OmegaConf.load(file)))


def scoring_fabric(accelerator="auto", devices=1, precision="32-true") -> Fabric:
    """Lightning's device and precision for scoring in this process, chosen by the Trainer arguments of
    the same names (jettag-predict's trainer.accelerator, trainer.devices, trainer.precision)."""
    from lightning.fabric import Fabric

    settings = f"trainer.accelerator={accelerator}, trainer.devices={devices}, trainer.precision={precision}"
    try:
        fabric = Fabric(accelerator=accelerator, devices=devices, precision=precision)
    except (RuntimeError, ValueError, ImportError) as err:  # Lightning's reason, e.g. no such device here
        reason = str(err).splitlines()[0].rstrip(".!")
        hint = "" if isinstance(err, ValueError) else "; trainer.accelerator=cpu runs on the CPU"
        raise ConfigError(f"{settings}: {reason}{hint}.") from None
    if fabric.world_size > 1:
        raise ConfigError(
            f"{settings} make {fabric.world_size} processes, but scoring runs in one; set trainer.devices=1, "
            "or trainer.devices=[N] for GPU N."
        )
    from jettag.threads import set_compute_threads

    set_compute_threads()  # the CPUs this job may use, not the machine's cores
    return fabric


@dataclass
class PredictSummary:
    jets: int = 0  # rows written, one per input jet
    scored: int = 0
    skipped: Counter = field(default_factory=Counter)  # reason -> jets written with NaN scores
    files: list[str] = field(default_factory=list)


@torch.inference_mode()
def score_jets(model: nn.Module, dataset: JetDataset, batch_size: int, device: torch.device) -> np.ndarray:
    """Class scores (jets, classes) in dataset order; batches of similar multiplicity, padded to their longest jet."""
    order = np.argsort(-dataset.counts, kind="stable")
    scores = []
    for start in range(0, len(order), batch_size):
        batch = dataset[order[start : start + batch_size]].to(device, non_blocking=True)
        scores.append(class_scores(model(*batch.inputs)).cpu())
    out = np.empty((len(order), scores[0].shape[1]), dtype=np.float32)
    out[order] = torch.cat(scores).numpy()
    return out


def predict_files(
    trained: TrainedModel,
    patterns: str | Sequence[str],
    output: str | Path,
    treename: str,
    observers: Sequence[str] = (),
    branches: Mapping[str, str] | None = None,
    chunk_size: int = 10_000,
    batch_size: int = 1024,
    drop_nonfinite: bool = False,
    fabric: Fabric | None = None,
    progress: bool = True,
    new_variables: Mapping[str, str] | None = None,
    drop_unphysical: bool = False,
) -> PredictSummary:
    """Score every jet of the files into `output` (tree `Events`), chunk by chunk.

    One row per input jet, files in the order given: `score_<class>` (float32), the observers and
    `entry`, the jet's entry number in its input file. Jets the model cannot take (no particles, or
    non-finite inputs with `drop_nonfinite`, an impossible particle with `drop_unphysical`) keep their row with NaN scores and are counted. `fabric`
    (`scoring_fabric`) sets the device and precision; by default the CPU in float32.
    """
    if chunk_size < 1 or batch_size < 1:
        raise ConfigError(
            f"data.chunk_size and data.eval_batch_size must be at least 1, not {chunk_size} and {batch_size}."
        )
    taken = {"entry", *(f"score_{name}" for name in trained.class_names)} & set(observers)
    if taken:
        raise ConfigError(
            f"data.observers lists {sorted(taken)}, names of branches jettag-predict writes; leave them out."
        )
    files = resolve_files(patterns, "files")
    if any(Path(f).resolve() == Path(output).resolve() for f in files):
        raise ConfigError(f"output={output} is one of the input files; write the scores to another file.")
    fabric = fabric or scoring_fabric("cpu")
    device = fabric.device
    model = fabric.setup_module(trained.model.eval())  # moved to the device, run at the chosen precision
    # the run's new variables (data.new_variables) may be inputs or observers; its selection is not
    # applied: every input jet gets its row
    variables = parse_new_variables(new_variables)
    builder = JetBuilder(
        trained.features, None, observers, branches, skip_empty=True, drop_nonfinite=drop_nonfinite,
        new_variables=variables, drop_unphysical=drop_unphysical,
    )  # fmt: skip
    source = JetSource(files, builder, treename, "files")
    source.scan()  # every file checked before anything is written
    summary = PredictSummary(files=files)
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    tree, dtypes = None, {}
    with uproot.recreate(output) as out:
        for info, chunk, jets, skipped in source.chunks(chunk_size, progress=progress, desc="scoring"):
            columns = score_chunk(trained, model, builder, info, chunk, jets, batch_size, device)
            summary.jets += chunk.stop - chunk.start
            summary.scored += len(jets)
            summary.skipped += skipped
            if tree is None:
                dtypes = {name: values.dtype for name, values in columns.items()}
                tree = out.mktree("Events", dtypes)
            tree.extend({name: values.astype(dtypes[name], copy=False) for name, values in columns.items()})
        if tree is None:  # no jets at all: an empty tree with the score branches
            out.mktree(
                "Events", {f"score_{name}": np.float32 for name in trained.class_names} | {"entry": np.int64}
            )
    return summary


def score_chunk(trained, model, builder, info, chunk, jets, batch_size, device) -> dict[str, np.ndarray]:
    """One row per entry of the chunk: the scores (NaN for jets the builder skipped) and observers."""
    num = chunk.stop - chunk.start
    kept = jets.entries - info.offset - chunk.start  # rows of the chunk that the builder kept
    scores = np.full((num, len(trained.class_names)), np.nan, dtype=np.float32)
    if len(jets):
        scores[kept] = score_jets(model, JetDataset(jets), batch_size, device)
    columns = {f"score_{name}": scores[:, i] for i, name in enumerate(trained.class_names)}
    for name, values in jets.observers.items():
        if name in info.plan.observers and name not in info.plan.computed:  # read: every row has one
            column = ak.to_numpy(chunk.arrays[builder.rename.get(name, name)])
        else:  # derived from the particles: NaN where the jet was skipped
            column = np.full(num, np.nan, dtype=np.float32)
            column[kept] = values
        columns[name] = column.astype(np.float32) if column.dtype == np.float16 else column
    columns["entry"] = np.arange(chunk.start, chunk.stop, dtype=np.int64)
    return columns
