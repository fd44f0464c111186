"""A trained tagger in an analysis: `jettag.load` and `Tagger.predict`.

    import jettag
    tagger = jettag.load("runs/mytop")                   # a run directory, a .ckpt, or ParT_kinpid.pt
    scores = tagger.predict(events)                      # (jets, classes) numpy array, input order
    scores = tagger.predict(["a.root", "b.root"])        # files, read chunk by chunk

`predict` takes jets with JetClass branch names: an awkward array of records (as uproot's
`tree.arrays()` returns it), a dict of such arrays, or files (ROOT, Parquet, HDF5; a path, a glob or
a list of them). Rows follow the input jets one to one; a jet without particles gets a row of NaN
(counted in `tagger.last_skipped`). Scores are those of `jettag-predict` on the same jets.

A tagger pickles (the network travels as its tensors), so it runs in `dask_awkward.map_partitions`
and on dask workers: `tagger(jets)` returns the scores as an awkward array of records
`score_<class>` and understands dask-awkward's typetracer arrays (it declares the branches it
reads, so dask reads no others). `jettag.coffea.TaggerWrapper` runs it through
`coffea.ml_tools`.
"""

from __future__ import annotations

import copy
import dataclasses
import os
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path

import awkward as ak
import numpy as np
import torch

from jettag.data.expressions import parse_new_variables
from jettag.data.jets import JetBuilder
from jettag.data.reader import Chunk
from jettag.data.source import JetSource
from jettag.errors import ConfigError, DataError
from jettag.features.variables import required_branches
from jettag.inference import TrainedModel, load_trained, score_chunk

# jets built at a time: memory is bounded by this (~25 MB per 1,000), not by the input size
DEFAULT_CHUNK = 10_000
DEFAULT_BATCH = {"cpu": 256, "other": 1024}  # jets per batch: a CPU gains nothing from more, and holds less
IN_MEMORY = "the jets given to predict"  # how in-memory jets are named in messages


def load(path: str | os.PathLike, features: str | None = None, device: str | torch.device = "cpu") -> Tagger:
    """The tagger of a `jettag-train` run directory (its `checkpoints/best.ckpt`), of a jettag checkpoint,
    or of a published weaver-core ParT / ParticleNet file, whose feature set `features` names
    (kin, kinpid or full; by default the published set of its input size). `device`: where it scores."""
    path = Path(path)
    if path.is_dir():
        checkpoint = path / "checkpoints" / "best.ckpt"
        if not checkpoint.is_file():
            raise ConfigError(
                f"jettag.load: '{path}' is a directory without checkpoints/best.ckpt; give a jettag-train run "
                "directory or a checkpoint file."
            )
        path = checkpoint
    elif not path.exists():
        raise ConfigError(f"jettag.load: '{path}' does not exist; give a run directory or a checkpoint file.")
    return Tagger(load_trained(path, features), device=device)


class Tagger:
    """A trained network with its inputs: `classes`, `features`, `branches` (see the module docstring)."""

    def __init__(self, trained: TrainedModel, device: str | torch.device = "cpu"):
        self.trained = trained
        self.device = torch.device(device)
        self.trained.model.to(self.device).eval()
        data = trained.config.get("data") or {}
        self.rename = dict(data.get("branches") or {})  # canonical name -> name in the run's files
        self.new_variables = dict(data.get("new_variables") or {})
        self.treename = str(data.get("treename") or "tree")
        self.last_skipped: Counter = Counter()

    # --- what it is ---------------------------------------------------------------------------------
    @property
    def classes(self) -> list[str]:
        """Class names (the label branches, e.g. ['label_QCD', 'label_Tbqq']), in the order of the score columns."""
        return list(self.trained.class_names)

    @property
    def features(self) -> list[str]:
        """The particle features the network takes, in its input order."""
        return list(self.trained.features.names)

    @property
    def max_particles(self) -> int:
        return int(self.trained.features.max_particles)

    @property
    def branches(self) -> list[str]:
        """The branches the jets must have (JetClass names): the four-momenta and the inputs that
        cannot be derived from them. The jet axis (jet_pt, jet_eta, jet_phi, jet_energy) is read as
        well where present, and otherwise summed from the particles."""
        read, _ = required_branches(
            self.features, {*self.features, "part_px", "part_py", "part_pz", "part_energy"}
        )
        return sorted(read)

    def __repr__(self) -> str:
        model = type(self.trained.model).__name__
        return (
            f"Tagger({model}, classes={self.classes}, {len(self.features)} features "
            f"({self.trained.features.name}), {self.max_particles} particles, from '{self.trained.checkpoint}')"
        )

    # --- scoring ------------------------------------------------------------------------------------
    def predict(
        self,
        jets,
        batch_size: int | None = None,
        chunk_size: int = DEFAULT_CHUNK,
        treename: str | None = None,
        branches: Mapping[str, str] | None = None,
        progress: bool = False,
    ) -> np.ndarray:
        """Class scores, a (jets, classes) float32 array whose rows follow the input jets.

        `jets`: an awkward array of records or a dict of arrays with JetClass branch names, or files
        (a path, a glob, or a list of them; `treename` for ROOT, by default the run's). `branches`
        maps a JetClass name to the name in your input (e.g. {'part_px': 'PF_px'}). `batch_size`: jets
        per batch, by default 256 on a CPU (the small ParT then peaks below 1 GB) and 1024 on a GPU.
        """
        if batch_size is None:
            batch_size = DEFAULT_BATCH["cpu" if self.device.type == "cpu" else "other"]
        if batch_size < 1 or chunk_size < 1:
            raise ConfigError(
                f"batch_size and chunk_size must be at least 1, not {batch_size} and {chunk_size}."
            )
        builder = self._builder({**self.rename, **dict(branches or {})})
        self.last_skipped = Counter()
        if _is_files(jets):
            return self._predict_files(jets, builder, batch_size, chunk_size, treename, progress)
        return self._predict_arrays(jets, builder, batch_size, chunk_size)

    def __call__(self, jets) -> ak.Array:
        """The scores as an awkward array of records `score_<class>`, one per jet; on a typetracer
        (dask-awkward's metadata pass) only the branches read are touched and no network runs."""
        fields = [f"score_{name}" for name in self.classes]
        if ak.backend(jets) == "typetracer":
            arrays = _as_record_array(jets)
            builder = self._builder(self.rename)
            for name in builder.plan(_ArrayFile(arrays)).all_branches(builder.rename):
                ak.typetracer.touch_data(arrays[name])
            form = ak.forms.RecordForm([ak.forms.NumpyForm("float32") for _ in fields], fields)
            return ak.Array(form.length_zero_array().to_typetracer(forget_length=True))
        scores = self.predict(jets)
        return ak.zip({name: scores[:, i] for i, name in enumerate(fields)})

    def _builder(self, rename: Mapping[str, str]) -> JetBuilder:
        return JetBuilder(
            self.trained.features, None, (), rename, skip_empty=True,
            new_variables=parse_new_variables(self.new_variables),
        )  # fmt: skip

    def _predict_files(self, patterns, builder, batch_size, chunk_size, treename, progress) -> np.ndarray:
        from jettag.data.reader import resolve_files

        files = resolve_files(patterns if not isinstance(patterns, Path) else str(patterns), "files")
        source = JetSource(files, builder, treename or self.treename, "files")
        source.scan()  # every file checked before scoring starts
        return self._score(source.chunks(chunk_size, progress=progress, desc="scoring"), builder, batch_size)

    def _predict_arrays(self, jets, builder, batch_size, chunk_size) -> np.ndarray:
        arrays = _as_record_array(jets)
        plan = builder.plan(_ArrayFile(arrays))  # missing fields: one sentence (`_ArrayFile`)

        def pieces():
            for start in range(0, len(arrays), chunk_size):
                chunk = Chunk(
                    IN_MEMORY, start, min(start + chunk_size, len(arrays)), arrays[start : start + chunk_size]
                )
                yield (_Info(plan), chunk, *builder.build(chunk, plan))

        return self._score(pieces(), builder, batch_size)

    def _score(self, pieces, builder: JetBuilder, batch_size: int) -> np.ndarray:
        """The scores of (source file, chunk as read, its jets, jets skipped) pieces, one row per jet read."""
        parts = []
        for info, chunk, built, skipped in pieces:
            columns = score_chunk(
                self.trained, self.trained.model, builder, info, chunk, built, batch_size, self.device
            )
            parts.append(np.stack([columns[f"score_{name}"] for name in self.classes], axis=1))
            self.last_skipped += skipped
        return np.concatenate(parts) if parts else np.zeros((0, len(self.classes)), dtype=np.float32)

    # --- pickling: on the CPU, moved back to its device where there is one -----------------------------
    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        if self.device.type != "cpu":
            state["trained"] = dataclasses.replace(
                self.trained, model=copy.deepcopy(self.trained.model).cpu()
            )
        state["device"] = str(self.device)
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        device = torch.device(state["device"])
        if device.type == "cuda" and not torch.cuda.is_available():
            device = torch.device("cpu")  # a worker without a GPU scores on its CPU
        self.device = device
        self.trained.model.to(device).eval()


class _ArrayFile:
    """In-memory jets standing in for a `JetFile` in `JetBuilder.plan`."""

    def __init__(self, arrays: ak.Array):
        self.path = IN_MEMORY
        self.label = None
        self.format = "arrays"
        self.branches = set(arrays.fields)

    def check_branches(self, branches, purpose: str) -> None:
        missing = sorted(set(branches) - self.branches)
        if missing:
            raise self._lack(missing, purpose)

    def lacks_inputs(self, names, feature_set: str) -> DataError:
        return self._lack(names, f"this tagger's inputs (feature set '{feature_set}')")

    @staticmethod
    def _lack(names, purpose: str) -> DataError:
        return DataError(
            f"tagger.predict: the jets lack the field(s) {', '.join(names)}, which {purpose} need(s); give jets "
            "with JetClass branch names (as uproot's tree.arrays() returns them), or map your names with "
            "branches={'<JetClass name>': '<yours>'}."
        )


class _Info:
    """What `score_chunk` needs of a source file: its read plan and its entry offset."""

    def __init__(self, plan):
        self.plan = plan
        self.offset = 0


def _is_files(jets) -> bool:
    if isinstance(jets, str | os.PathLike):
        return True
    return (
        isinstance(jets, Sequence)
        and not isinstance(jets, ak.Array)
        and all(isinstance(j, str | os.PathLike) for j in jets)
        and len(jets) > 0
    )


def _as_record_array(jets) -> ak.Array:
    if isinstance(jets, ak.Array):
        if not jets.fields:
            raise DataError(
                "tagger.predict: the jets are an awkward array without fields; give records with JetClass "
                "branch names (as uproot's tree.arrays() returns them), a dict of arrays, or files."
            )
        return jets
    if isinstance(jets, Mapping):
        lengths = {name: len(values) for name, values in jets.items()}
        if len(set(lengths.values())) > 1:
            shown = ", ".join(f"{k}: {v}" for k, v in list(lengths.items())[:4])
            raise DataError(
                f"tagger.predict: the arrays of the dict differ in length ({shown}); give one entry per jet."
            )
        return ak.zip({name: ak.Array(values) if not isinstance(values, ak.Array) else values
                       for name, values in jets.items()}, depth_limit=1)  # fmt: skip
    raise DataError(
        f"tagger.predict: cannot score a {type(jets).__name__}; give an awkward array of jets, a dict of arrays "
        "with JetClass branch names, or file paths."
    )
