"""The LightningDataModule: files of each split -> JetArrays in memory -> padded batches."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Mapping, Sequence

import lightning as L
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from jettag.data.dataset import JetBatchSampler, JetDataset
from jettag.data.jets import JetArrays, JetBuilder
from jettag.data.labels import LabelSpec
from jettag.data.reader import JetFile, resolve_files
from jettag.errors import ConfigError, DataError
from jettag.features.sets import FeatureSet

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")


def read_jets(
    files: Sequence[str], builder: JetBuilder, treename: str, chunk_size: int, key: str, progress: bool = True
) -> tuple[JetArrays, Counter]:
    """Read and convert every jet of `files`, chunk by chunk, with a progress bar."""
    jet_files = [JetFile(path, treename) for path in files]
    total = sum(f.num_entries for f in jet_files)
    if total == 0:
        raise DataError(
            f"{key}: the files {', '.join(files)} hold no jets; check that they are the right files."
        )
    parts, skipped = [], Counter()
    with tqdm(total=total, unit=" jets", desc=f"reading {key}", disable=not progress, leave=False) as bar:
        for jet_file in jet_files:
            plan = builder.plan(jet_file)
            for chunk in jet_file.iterate(plan.all_branches(builder.rename), chunk_size):
                arrays, chunk_skipped = builder.build(chunk, plan)
                if len(arrays):
                    parts.append(arrays)
                skipped += chunk_skipped
                bar.update(chunk.stop - chunk.start)
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
        labels: Sequence[str] | str = ("label_QCD", "label_Tbqq"),
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
    ):
        super().__init__()
        if batch_size < 1:
            raise ConfigError(f"data.batch_size must be at least 1, not {batch_size}.")
        if chunk_size < 1:
            raise ConfigError(f"data.chunk_size must be at least 1, not {chunk_size}.")
        self.features = features
        self.files = {"train": train_files, "val": val_files, "test": test_files}
        self.treename = treename
        self.label_spec = LabelSpec.from_config(labels, class_names)
        self.background = self.label_spec.index(background)
        self.builder = JetBuilder(
            features,
            self.label_spec,
            observers,
            branches,
            skip_empty=skip_empty_jets,
            drop_nonfinite=drop_nonfinite_jets,
        )
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or batch_size
        self.num_workers = num_workers
        self.chunk_size = chunk_size
        self.group_by_length = group_by_length
        self.seed = seed
        self.progress = progress
        self.datasets: dict[str, JetDataset] = {}
        self.skipped: dict[str, dict[str, int]] = {}

    @property
    def class_names(self) -> list[str]:
        return list(self.label_spec.class_names)

    @property
    def num_classes(self) -> int:
        return self.label_spec.num_classes

    def dataset(self, split: str) -> JetDataset:
        """The jets of one split, read on first use."""
        if split not in self.datasets:
            key = f"data.{split}_files"
            files = resolve_files(self.files[split], key)
            jets, skipped = read_jets(files, self.builder, self.treename, self.chunk_size, key, self.progress)
            self.skipped[split] = dict(skipped)
            for why, n in skipped.items():
                log.warning("%s: skipped %d jets (%s) of %d", key, n, why.replace("_", " "), n + len(jets))
            self.datasets[split] = JetDataset(jets)
        return self.datasets[split]

    def setup(self, stage: str | None = None) -> None:
        splits = {"fit": ("train", "val"), "validate": ("val",), "test": ("test",), "predict": ("test",)}
        for split in splits.get(stage, SPLITS) if stage else SPLITS:
            self.dataset(split)

    def summary(self) -> dict:
        """Jets used and skipped per split, for reports."""
        return {
            split: {"jets": len(ds), "skipped": self.skipped.get(split, {})}
            for split, ds in self.datasets.items()
        }

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        dataset = self.dataset(split)
        sampler = JetBatchSampler(
            dataset.counts,
            self.batch_size if shuffle else self.eval_batch_size,
            shuffle=shuffle,
            drop_last=shuffle and len(dataset) > self.batch_size,
            # Evaluation always groups: eval-mode scores do not depend on the other jets of a batch.
            group_by_length=self.group_by_length or not shuffle,
            labels=dataset.labels.numpy() if shuffle else None,
            seed=self.seed,
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
