"""A jettag tagger in a coffea processor, through coffea's ML inference tools (`coffea.ml_tools`).

    from jettag.coffea import TaggerWrapper
    tagger = TaggerWrapper("runs/mytop")            # or a .ckpt, or ParT_kinpid.pt with features="kinpid"
    scores = tagger(fatjets)                        # awkward or dask-awkward jets -> (jets, classes)

`TaggerWrapper` is a `coffea.ml_tools.torch_wrapper`: `prepare_awkward` turns the jets into regular
arrays with awkward operations only (so it runs lazily on dask-awkward arrays and declares the
branches it reads), padding each particle branch to `width` particles; `numpy_call` scores them with
`jettag.load(path).predict` on the worker, where the tagger is loaded once (coffea keeps the model out
of the pickled wrapper). A jet with more than `width` particles stops with one sentence: the jet axis
and relative features are computed from all of a jet's particles, so none may be cut here.
"""

from __future__ import annotations

import numpy as np

try:
    from coffea.ml_tools.torch_wrapper import torch_wrapper
except ImportError as err:  # pragma: no cover - coffea is optional
    raise ImportError(
        "jettag.coffea needs coffea, which is not installed; install it with pip install coffea."
    ) from err

import awkward

from jettag.errors import DataError

DEFAULT_WIDTH = 256  # particles per jet the padded arrays hold (JetClass jets have fewer)


class TaggerWrapper(torch_wrapper):
    """`coffea.ml_tools` wrapper of a jettag tagger (see the module docstring)."""

    def __init__(
        self, path: str, features: str | None = None, width: int = DEFAULT_WIDTH, batch_size: int = 1024
    ):
        super().__init__(str(path), expected_output_shape=None)
        self.features = features
        self.width = int(width)
        self.batch_size = int(batch_size)
        tagger = self.model  # loaded here once, to learn the branches; dropped when pickled
        self.branches = list(tagger.branches)
        self.classes = list(tagger.classes)

    def _create_model(self):
        from jettag.tagger import load

        return load(self.torch_jit, features=self.features, device=self.device)

    def prepare_awkward(self, jets):
        ak = self.get_awkward_lib(jets)
        missing = [name for name in self.branches if name not in jets.fields]
        if missing:
            raise DataError(
                f"TaggerWrapper: the jets lack the field(s) {', '.join(missing)}, which the tagger's inputs need; "
                "give jets with JetClass branch names."
            )
        particle = [name for name in self.branches if jets[name].ndim > 1]
        counts = ak.num(jets[particle[0]], axis=1)
        padded = {
            name: ak.fill_none(ak.pad_none(jets[name], self.width, axis=1, clip=True), 0.0)
            for name in particle
        }
        flat = {name: jets[name] for name in self.branches if name not in padded}
        return (counts,), {**padded, **flat}

    def validate_numpy_input(self, counts: np.ndarray, **columns: np.ndarray) -> None:
        if len(counts) and counts.max() > self.width:
            raise DataError(
                f"TaggerWrapper: a jet has {int(counts.max())} particles, more than width={self.width}; make the "
                "wrapper with a larger width."
            )

    def numpy_call(self, counts: np.ndarray, **columns: np.ndarray) -> np.ndarray:
        counts = np.asarray(counts, dtype=np.int64)
        keep = np.arange(self.width)[None, :] < counts[:, None]
        jets = {}
        for name, values in columns.items():
            values = np.asarray(values)
            if values.ndim == 2:  # back to one list of particles per jet
                jets[name] = awkward.unflatten(values[keep], counts)
            else:
                jets[name] = values
        return self.model.predict(jets, batch_size=self.batch_size)
