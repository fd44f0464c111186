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
from dataclasses import dataclass
from pathlib import Path

import lightning as L
import numpy as np
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

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
from jettag.data.jets import JetArrays, JetBuilder, ReadPlan
from jettag.data.labels import LabelSpec
from jettag.data.reader import FileEntry, JetFile, resolve_entries
from jettag.data.streaming import JetStream, JetStreamLoader, StreamFile
from jettag.errors import ConfigError, DataError, JetTagError
from jettag.features.sets import FeatureSet

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
UNLABELLED = "unlabelled"  # the one class of jets read with data.labels: null


def _as_entry(f) -> FileEntry:
    return f if isinstance(f, FileEntry) else FileEntry(str(f))


@dataclass(frozen=True)
class CheckedFile:
    """A file that opened and passed the checks, closed again: what reading and streaming need of it."""

    path: str
    label: int | None
    num_entries: int
    plan: ReadPlan | None  # None: the file has no entries
    bounds: tuple[int, ...] | None = None  # piece boundaries (JetFile.piece_bounds), when asked for


def check_files(
    entries: Sequence[FileEntry | str],
    builder: JetBuilder,
    treename: str,
    key: str,
    skip_bad_files: bool = False,
    skipped: Counter | None = None,
    chunk_size: int | None = None,
) -> list[CheckedFile]:
    """Open every file and check its branches before reading; bad files are errors or, with
    `skip_bad_files`, warnings (their jets counted as `bad_file`). With `chunk_size`, also the
    boundaries of the file's pieces (for streaming).

    One file is open at a time: each is closed before the next is opened. With all of them open
    together, uproot's objects of every file (about 0.35 MB each) were alive at once, and the few
    long-lived objects allocated meanwhile (these records) landed among them; once the files were
    freed, those few kept CPython's memory pools (1 MB arenas) from being released, and the resident
    set stayed about 0.35 MB higher per file checked (32 more arenas, the same allocated bytes, for 90
    files).
    """
    spec = builder.labels
    checked = []
    for entry in map(_as_entry, entries):
        label = spec.group_index(entry.group, key) if entry.group is not None and spec else None
        try:
            jet_file = JetFile(entry.path, treename, label)
            try:
                # a file without entries adds nothing, whatever its branches
                plan = builder.plan(jet_file) if jet_file.num_entries else None
                bounds = tuple(jet_file.piece_bounds(chunk_size)) if chunk_size is not None else None
            finally:
                jet_file.close()
            checked.append(CheckedFile(entry.path, label, jet_file.num_entries, plan, bounds))
        except JetTagError as err:
            if not skip_bad_files or isinstance(err, ConfigError):
                raise
            lost = _entries_if_readable(entry.path, treename)
            log.warning("%s: skipping a bad file (%d jets): %s", key, lost, err)
            if skipped is not None:
                skipped["bad_file"] += lost
                skipped["bad_files"] += 1
    return checked


def _entries_if_readable(path: str, treename: str) -> int:
    try:
        jet_file = JetFile(path, treename)
    except JetTagError:
        return 0
    jet_file.close()
    return jet_file.num_entries


def read_jets(
    files: Sequence[str | FileEntry],
    builder: JetBuilder,
    treename: str,
    chunk_size: int,
    key: str,
    progress: bool = True,
    skip_bad_files: bool = False,
    ranges: Sequence[tuple[int, int]] | None = None,
) -> tuple[JetArrays, Counter]:
    """Read and convert every jet of `files` (or the entry `ranges` of each), chunk by chunk."""
    skipped: Counter = Counter()
    checked = check_files(files, builder, treename, key, skip_bad_files, skipped)
    names = [_as_entry(f).path for f in files]
    return _read_checked(
        checked, builder, treename, chunk_size, key, progress, skip_bad_files, ranges, skipped, names
    )


def _read_checked(
    checked: Sequence[CheckedFile],
    builder: JetBuilder,
    treename: str,
    chunk_size: int,
    key: str,
    progress: bool,
    skip_bad_files: bool,
    ranges: Sequence[tuple[int, int]] | None = None,
    skipped: Counter | None = None,
    names: Sequence[str] | None = None,  # of all the files asked for, for the error message
) -> tuple[JetArrays, Counter]:
    """The jets of checked files (or of the entry `ranges` of each), one open file at a time."""
    skipped = Counter() if skipped is None else skipped
    if ranges is None:
        ranges = [(0, f.num_entries) for f in checked]
    total = sum(stop - start for start, stop in ranges)
    if total == 0:
        names = ", ".join(names if names is not None else [f.path for f in checked])
        raise DataError(f"{key}: the files {names} hold no jets; check that they are the right files.")
    parts = []
    with tqdm(total=total, unit=" jets", desc=f"reading {key}", disable=not progress, leave=False) as bar:
        for info, (first, last) in zip(checked, ranges, strict=False):
            if info.plan is None or first >= last:
                continue
            try:
                jet_file = JetFile(info.path, treename, info.label)
            except DataError as err:  # it opened when checked: changed or gone since
                if not skip_bad_files:
                    raise
                log.warning("%s: skipped %d jets: %s", key, last - first, err)
                skipped["bad_file"] += last - first
                bar.update(last - first)
                continue
            read = info.plan.all_branches(builder.rename)
            position = first
            try:
                while position < last:
                    try:
                        for chunk in jet_file.iterate(read, chunk_size, position, last):
                            arrays, chunk_skipped = builder.build(chunk, info.plan)
                            if len(arrays):
                                parts.append(arrays)
                            skipped += chunk_skipped
                            bar.update(chunk.stop - chunk.start)
                            position = chunk.stop
                    except DataError as err:
                        if not skip_bad_files:
                            raise
                        # skip the chunk that failed and go on after it
                        lost = min(chunk_size, last - position)
                        log.warning("%s: skipped %d jets: %s", key, lost, err)
                        skipped["bad_file"] += lost
                        bar.update(lost)
                        position += lost
            finally:
                jet_file.close()
    if not parts:
        reasons = ", ".join(f"{n} {why.replace('_', ' ')}" for why, n in skipped.items())
        raise DataError(f"{key}: all {total} jets were skipped ({reasons}); nothing is left to use.")
    return JetArrays.concatenate(parts), skipped


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
        group_by_length: bool = False,
        skip_empty_jets: bool = True,
        drop_nonfinite_jets: bool = False,
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
        skip_bad_files: bool = False,
    ):
        super().__init__()
        if batch_size < 1:
            raise ConfigError(f"data.batch_size must be at least 1, not {batch_size}.")
        if chunk_size < 1:
            raise ConfigError(f"data.chunk_size must be at least 1, not {chunk_size}.")
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
            selection=Expression.parse(selection, "data.selection") if selection else None,
            new_variables=parse_new_variables(new_variables),
        )
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or batch_size
        self.num_workers = num_workers
        self.chunk_size = chunk_size
        self.group_by_length = group_by_length
        self.seed = seed
        self.progress = progress
        self.streaming = streaming
        self.in_memory_max_jets = in_memory_max_jets
        self.shuffle_buffer = shuffle_buffer
        self.standardization = standardization
        self.fit_fraction = fit_fraction
        self.fit_max_jets = fit_max_jets
        self.skip_bad_files = skip_bad_files
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
        checked = check_files(self._entries("train"), raw, self.treename, key, self.skip_bad_files)
        ranges = sample_ranges([f.num_entries for f in checked], self.fit_fraction, self.fit_max_jets)
        sample, _ = _read_checked(
            checked, raw, self.treename, self.chunk_size, f"{key} (fit sample)", self.progress,
            self.skip_bad_files, ranges,
        )  # fmt: skip
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
        if not hasattr(self, "_train_total"):
            checked = check_files(self._entries("train"), self.builder, self.treename, "data.train_files",
                                  self.skip_bad_files)  # fmt: skip
            self._train_total = sum(f.num_entries for f in checked)
        return self._train_total > self.in_memory_max_jets

    def dataset(self, split: str) -> JetDataset:
        """The jets of one split in memory, read on first use."""
        if split not in self.datasets:
            if split == "train":
                self.fit()
            key = f"data.{split}_files"
            jets, skipped = read_jets(
                self._entries(split), self.builder, self.treename, self.chunk_size, key, self.progress,
                self.skip_bad_files,
            )  # fmt: skip
            self.skipped[split] = dict(skipped)
            for why, n in skipped.items():
                log.warning("%s: skipped %d jets (%s) of %d", key, n, why.replace("_", " "), n + len(jets))
            self.datasets[split] = JetDataset(jets)
        return self.datasets[split]

    def stream(self, split: str) -> JetStream:
        """The jets of one split as a stream; the files are opened and checked on first use."""
        if split not in self.streams:
            self.fit()
            key = f"data.{split}_files"
            skipped: Counter = Counter()
            checked = check_files(
                self._entries(split), self.builder, self.treename, key, self.skip_bad_files, skipped,
                chunk_size=self.chunk_size,
            )  # fmt: skip
            files = [StreamFile(f.path, f.num_entries, f.label, f.bounds) for f in checked]
            if not sum(f.num_entries for f in files):
                raise DataError(f"{key}: the files hold no jets; check that they are the right files.")
            train = split == "train"
            self.streams[split] = JetStream(
                files, self.builder, self.treename,
                batch_size=self.batch_size if train else self.eval_batch_size,
                chunk_size=self.chunk_size, shuffle=train, shuffle_buffer=self.shuffle_buffer, seed=self.seed,
                weights=self.reweighting if train else None, skip_bad_files=self.skip_bad_files,
            )  # fmt: skip
            self.skipped[split] = dict(skipped)
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
            loader = JetStreamLoader(self.stream(split), num_workers=self.num_workers)
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
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)
