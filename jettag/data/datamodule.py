"""The LightningDataModule: files of each split -> padded batches, in memory or streamed.

In memory (the default for small sets): every jet of a split is read once into `JetArrays` and
batches are drawn by `JetBatchSampler`. Streaming (`streaming: true`, or `auto` above
`in_memory_max_jets` training jets): the training and validation files are read piece by piece
by a `JetStream` in every epoch, sharded over DataLoader workers and DDP ranks, with flat memory.
The test split is always read into memory: its report keeps every jet's scores, truth and
observers anyway.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader

from jettag.data.arrays import JetArrays
from jettag.data.dataset import JetBatchSampler, JetDataset
from jettag.data.expressions import Expression, parse_new_variables
from jettag.data.fit import (
    Reweighting,
    fit_standardization,
    raw_feature_set,
    sample_ranges,
    standardization_record,
    write_json,
)
from jettag.data.jets import JetBuilder
from jettag.data.labels import LabelSpec
from jettag.data.reader import FileEntry, resolve_entries
from jettag.data.source import JetSource
from jettag.data.streaming import JetStream, JetStreamLoader
from jettag.errors import ConfigError, DataError
from jettag.features.sets import FeatureSet

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
UNLABELLED = "unlabelled"  # the one class of jets read with data.labels: null


class JetDataModule(L.LightningDataModule):
    def __init__(
        self,
        features: FeatureSet,
        train_files: Sequence[str] | None = None,
        val_files: Sequence[str] | None = None,
        test_files: Sequence[str] | None = None,
        treename: str = "tree",
        labels: Sequence[str] | str | None = ("label_QCD", "label_Tbqq"),
        class_names: Sequence[str] | None = None,
        background: str | None = None,
        observers: Sequence[str] = (),
        branches: Mapping[str, str] | None = None,
        batch_size: int = 256,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        chunk_size: int = 100_000,
        piece_size: int = 100_000,
        group_by_length: bool = False,
        skip_empty_jets: bool = True,
        drop_nonfinite_jets: bool = False,
        drop_unphysical_jets: bool = False,
        seed: int = 0,
        progress: bool = True,
        streaming: bool | str = False,
        in_memory_max_jets: int = 5_000_000,
        shuffle_buffer: int = 100_000,
        selection: str | None = None,
        new_variables: Mapping[str, str] | None = None,
        standardization: str = "fixed",
        fit_fraction: float = 0.05,
        fit_max_jets: int = 200_000,
        reweight: Mapping | None = None,
        on_bad_file: str = "error",
    ):
        super().__init__()
        sizes = {"batch_size": batch_size, "eval_batch_size": 1 if eval_batch_size is None else eval_batch_size, "chunk_size": chunk_size,
                 "piece_size": piece_size, "shuffle_buffer": shuffle_buffer, "fit_max_jets": fit_max_jets}  # fmt: skip
        for key, value in sizes.items():
            if value < 1:
                raise ConfigError(f"data.{key} must be at least 1, not {value}.")
        if num_workers < 0:
            raise ConfigError(
                f"data.num_workers must be 0 (read in the main process) or more, not {num_workers}."
            )
        if in_memory_max_jets < 0:
            raise ConfigError(f"data.in_memory_max_jets must be 0 or more, not {in_memory_max_jets}.")
        if not 0 < fit_fraction <= 1:
            raise ConfigError(
                f"data.fit_fraction={fit_fraction} must lie in (0, 1]: the fraction of each training file read for the fits."
            )
        if on_bad_file not in ("error", "skip"):
            raise ConfigError(
                f"data.on_bad_file={on_bad_file!r}; use error (stop at a damaged or mismatched file) or skip "
                "(skip it, counting its jets in the log and metrics.json)."
            )
        if streaming not in (True, False, "auto"):
            raise ConfigError(f"data.streaming={streaming!r}; use true, false or auto.")
        if standardization not in ("fixed", "auto"):
            raise ConfigError(
                f"data.standardization={standardization!r}; use fixed (the feature set's numbers) or auto "
                "(fit every standardized feature on the training data)."
            )
        self.features = features
        self.files = {"train": train_files, "val": val_files, "test": test_files}
        self.treename = treename
        # labels: null reads files without label branches (self-supervised pretraining): every jet is
        # of the one class "unlabelled" and per-class file groups only name files.
        self.label_spec = None if labels is None else LabelSpec.from_config(labels, class_names)
        if self.label_spec is None and background is not None:
            raise ConfigError(
                f"data.background={background!r} needs data.labels; it is null (unlabelled jets)."
            )
        self.background = self.label_spec.index(background) if self.label_spec else 0
        self.reweighting = Reweighting.from_config(reweight, self.class_names)
        observers = list(observers)
        for name in self.reweighting.variables if self.reweighting else ():
            if name not in observers:
                observers.append(name)
        self.builder = JetBuilder(
            features,
            self.label_spec,
            observers,
            branches,
            skip_empty=skip_empty_jets,
            drop_nonfinite=drop_nonfinite_jets,
            drop_unphysical=drop_unphysical_jets,
            selection=Expression.parse(selection, "data.selection") if selection else None,
            new_variables=parse_new_variables(new_variables),
        )
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or batch_size
        self.num_workers = num_workers
        self.chunk_size = chunk_size  # jets read at a time (in memory, fit sample, test split)
        self.piece_size = piece_size  # jets of a streamed piece
        self.group_by_length = group_by_length
        self.seed = seed
        self.progress = progress
        self.streaming = streaming
        self.in_memory_max_jets = in_memory_max_jets
        self.shuffle_buffer = shuffle_buffer
        self.standardization = standardization
        self.fit_fraction = fit_fraction
        self.fit_max_jets = fit_max_jets
        self.on_bad_file = on_bad_file
        self.sources: dict[str, JetSource] = {}
        self.datasets: dict[str, JetDataset] = {}
        self.streams: dict[str, JetStream] = {}
        self.loaders: dict[str, JetStreamLoader] = {}
        self.skipped: dict[str, dict[str, int]] = {}
        self.fit_sample: JetArrays | None = None  # labels and observers of the fit sample (no particles)
        self.standardization_fit: dict | None = None
        self.fitted = False

    @property
    def class_names(self) -> list[str]:
        return list(self.label_spec.class_names) if self.label_spec else [UNLABELLED]

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def _entries(self, split: str) -> list[FileEntry]:
        return resolve_entries(self.files[split], f"data.{split}_files")

    def source(self, split: str) -> JetSource:
        """The files of one split, scanned (opened and checked once each) on first use."""
        if split not in self.sources:
            self.sources[split] = JetSource(
                self._entries(split), self.builder, self.treename, f"data.{split}_files", self.on_bad_file == "skip",
                piece_size=self.piece_size if split != "test" else None,
            )  # fmt: skip
        return self.sources[split]

    # --- fitting on the training data -------------------------------------------------------

    @property
    def needs_fit(self) -> bool:
        return self.features.needs_fit or self.standardization == "auto" or self.reweighting is not None

    def fit(self) -> None:
        """Fit standardization and sampling weights on a fraction of the training files (once)."""
        if self.fitted or not self.needs_fit:
            return
        if self.files["train"] is None:
            if self.features.needs_fit:
                raise ConfigError(
                    "features: some features are standardized 'auto' but data.train_files is not set to fit "
                    "them; evaluate a trained run, whose checkpoint holds the fitted numbers."
                )
            return
        key = "data.train_files"
        refit = self.standardization == "auto"
        raw = JetBuilder(
            raw_feature_set(self.features, refit),
            self.builder.labels,
            self.builder.observers,
            self.builder.rename,
            skip_empty=True,
            drop_nonfinite=True,
            selection=self.builder.selection,
            new_variables=self.builder.new_variables,
        )
        source = self.source("train")
        ranges = sample_ranges([f.num_entries for f in source.files], self.fit_fraction, self.fit_max_jets)
        sample, _ = source.read(self.chunk_size, ranges, raw, self.progress, f"{key} (fit sample)")
        if self.features.needs_fit or refit:
            self.features = fit_standardization(self.features, sample.features, refit)
            self.builder.features = self.features
            self.standardization_fit = standardization_record(
                self.features, len(sample), len(sample.features)
            )
            log.info("standardization fitted on %d training jets", len(sample))
        if self.reweighting is not None:
            self.reweighting.fit(sample)
        # keep what the reweighting record and plot need, not the particles (memory stays flat)
        self.fit_sample = JetArrays(
            np.zeros((0, sample.features.shape[1]), np.float32), np.zeros((0, 4), np.float32),
            sample.counts, sample.labels, {}, sample.observers,
        )  # fmt: skip
        self.fitted = True

    def save_fit(self, run_dir: str | Path) -> list[Path]:
        """standardization.json, reweighting.json and reweighting.png in the run directory."""
        run_dir = Path(run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        written = []
        if self.standardization_fit:
            write_json(run_dir / "standardization.json", self.standardization_fit)
            written.append(run_dir / "standardization.json")
        if self.reweighting is not None and self.fit_sample is not None:
            write_json(run_dir / "reweighting.json", self.reweighting.record(self.fit_sample))
            self.reweighting.plot(self.fit_sample, run_dir / "reweighting.png")
            written += [run_dir / "reweighting.json", run_dir / "reweighting.png"]
        return written

    # --- the splits -------------------------------------------------------------------------

    def is_streamed(self, split: str) -> bool:
        if split == "test" or self.streaming is False:
            return False
        if self.streaming is True:
            return True
        return self.source("train").total > self.in_memory_max_jets

    def dataset(self, split: str) -> JetDataset:
        """The jets of one split in memory, read on first use."""
        if split not in self.datasets:
            if split == "train":
                self.fit()
            key = f"data.{split}_files"
            jets, skipped = self.source(split).read(self.chunk_size, progress=self.progress)
            self.skipped[split] = dict(skipped)
            for why, n in skipped.items():
                log.warning("%s: skipped %d jets (%s) of %d", key, n, why.replace("_", " "), n + len(jets))
            self.datasets[split] = JetDataset(jets)
        return self.datasets[split]

    def stream(self, split: str) -> JetStream:
        """The jets of one split as a stream; the files are scanned on first use."""
        if split not in self.streams:
            self.fit()
            source = self.source(split)
            if not source.total:
                raise DataError(
                    f"data.{split}_files: the files hold no jets; check that they are the right files."
                )
            train = split == "train"
            self.streams[split] = JetStream(
                source, batch_size=self.batch_size if train else self.eval_batch_size, shuffle=train,
                shuffle_buffer=self.shuffle_buffer, seed=self.seed, weights=self.reweighting if train else None,
            )  # fmt: skip
            self.skipped[split] = dict(source.skipped)
        return self.streams[split]

    def setup(self, stage: str | None = None) -> None:
        splits = {"fit": ("train", "val"), "validate": ("val",), "test": ("test",), "predict": ("test",)}
        for split in splits.get(stage, SPLITS) if stage else SPLITS:
            if self.is_streamed(split):
                self.stream(split)
            else:
                self.dataset(split)

    def summary(self) -> dict:
        """Jets used and skipped per split, for reports (streamed splits: in the last epoch)."""
        out = {
            split: {"jets": len(ds), "skipped": self.skipped.get(split, {})}
            for split, ds in self.datasets.items()
        }
        for split, stream in self.streams.items():
            loader = self.loaders.get(split)
            skipped = Counter(self.skipped.get(split, {}))
            if loader is not None:
                skipped += loader.skipped
            out[split] = {
                "jets": loader.jets if loader else 0,
                "streamed": True,
                "files": len(stream.files),
                "skipped": dict(skipped),
            }
        return out

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        if self.is_streamed(split):
            loader = JetStreamLoader(
                self.stream(split), num_workers=self.num_workers, generator=self._generator()
            )
            self.loaders[split] = loader
            return loader
        dataset = self.dataset(split)
        weights = self.reweighting.weights(dataset.jets) if shuffle and self.reweighting else None
        sampler = JetBatchSampler(
            dataset.counts,
            self.batch_size if shuffle else self.eval_batch_size,
            shuffle=shuffle,
            drop_last=shuffle and len(dataset) > self.batch_size,
            # Evaluation always groups: eval-mode scores do not depend on the other jets of a batch.
            group_by_length=self.group_by_length or not shuffle,
            labels=dataset.labels.numpy() if shuffle else None,
            seed=self.seed,
            weights=weights,
        )
        return DataLoader(
            dataset,
            batch_size=None,
            sampler=sampler,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            generator=self._generator(),
        )

    def _generator(self) -> torch.Generator:
        """A loader's own random generator: making an iterator draws the workers' base seed from it, not
        from torch's global generator, so the dropout and augmentations of training draw the same
        numbers whether or not the run was resumed (or validated) in between."""
        return torch.Generator().manual_seed(self.seed)

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)
