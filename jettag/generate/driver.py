"""Several classes, several processes: the blocks of every requested class run in worker processes
(or in this one), then are concatenated and shuffled in an order fixed by the seed."""

from __future__ import annotations

import multiprocessing
import os
import time
import zlib
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from typing import Any

import awkward as ak
import numpy as np

from jettag.errors import ConfigError
from jettag.generate.backends import check_generators
from jettag.generate.blocks import BlockResult, BlockTask, ClassStats, JetWindow, block_seed, run_block
from jettag.generate.branches import BRANCHES
from jettag.generate.processes import ProcessSpec, resolve_classes

DEFAULT_BLOCK_SIZE = 50


@dataclass
class GeneratedJets:
    """Generated jets as JetClass branches (`arrays`, in `BRANCHES` order) and per-class counters."""

    arrays: dict[str, Any]
    stats: dict[str, ClassStats]
    seconds: float = 0.0

    def __len__(self) -> int:
        return len(self.arrays["jet_pt"])


def plan_blocks(
    specs: Sequence[ProcessSpec], jets_per_class: int, seed: int, window: JetWindow, block_size: int
) -> list[BlockTask]:
    tasks = []
    for spec in specs:
        for index, start in enumerate(range(0, jets_per_class, block_size)):
            n = min(block_size, jets_per_class - start)
            tasks.append(BlockTask(spec.name, index, n, block_seed(seed, spec.name, index), window))
    return tasks


def _check_counts(jets_per_class: int, seed: int, workers: int | None, block_size: int) -> None:
    if (
        isinstance(jets_per_class, bool)
        or not isinstance(jets_per_class, int | np.integer)
        or jets_per_class < 1
    ):
        raise ConfigError(f"jets per class must be a positive integer, not {jets_per_class!r}.")
    if not isinstance(seed, int | np.integer) or seed < 0:
        raise ConfigError(f"seed must be a non-negative integer, not {seed!r}.")
    if workers is not None and workers < 1:
        raise ConfigError(f"workers must be at least 1, not {workers}.")
    if block_size < 1:
        raise ConfigError(f"block_size must be at least 1, not {block_size}.")


def generate_jets(
    classes: Sequence[str] | str = ("Tbqq", "QCD"),
    jets_per_class: int = 1000,
    seed: int = 1,
    workers: int | None = None,
    pt_min: float = 550.0,
    pt_max: float = 650.0,
    eta_max: float = 2.0,
    progress: bool = True,
    block_size: int = DEFAULT_BLOCK_SIZE,
) -> GeneratedJets:
    """Generate `jets_per_class` jets of each class, interleaved in a shuffled order fixed by `seed`.

    The result depends only on (classes, jets_per_class, seed, window, block_size), not on
    `workers` (default: the number of CPUs). `progress` shows a tqdm bar of jets done.
    """
    specs = resolve_classes(classes)
    window = JetWindow(float(pt_min), float(pt_max), float(eta_max))
    window.check()
    _check_counts(jets_per_class, seed, workers, block_size)
    check_generators()
    tasks = plan_blocks(specs, int(jets_per_class), int(seed), window, int(block_size))
    workers = min(workers or os.cpu_count() or 1, len(tasks))

    from tqdm.auto import tqdm

    start = time.perf_counter()
    results: list[BlockResult | None] = [None] * len(tasks)
    with tqdm(total=sum(t.n_jets for t in tasks), unit="jet", desc="generating", disable=not progress) as bar:
        if workers == 1:
            for i, task in enumerate(tasks):
                results[i] = run_block(task)
                bar.update(task.n_jets)
        else:
            # spawn: a fork of a parent holding threads (tqdm, torch) can deadlock
            context = multiprocessing.get_context("spawn")
            with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
                futures = {pool.submit(run_block, task): i for i, task in enumerate(tasks)}
                try:
                    from concurrent.futures import as_completed

                    for future in as_completed(futures):
                        results[futures[future]] = future.result()
                        bar.update(future.result().task.n_jets)
                except BaseException:
                    pool.shutdown(wait=False, cancel_futures=True)
                    raise
    seconds = time.perf_counter() - start

    stats = {spec.name: ClassStats() for spec in specs}
    for result in results:
        stats[result.task.process].add(result.stats)
    arrays = {
        name: ak.concatenate([r.arrays[name] for r in results])
        if name.startswith(("part_", "aux_"))
        else np.concatenate([r.arrays[name] for r in results])
        for name in BRANCHES
    }
    order = shuffle_order(len(arrays["jet_pt"]), seed)
    arrays = {
        name: (ak.to_packed(a[order]) if isinstance(a, ak.Array) else a[order]) for name, a in arrays.items()
    }
    return GeneratedJets(arrays, stats, seconds)


def shuffle_order(n: int, seed: int) -> np.ndarray:
    """The order in which jets of all classes are written: a permutation fixed by `seed`."""
    return np.random.default_rng(np.random.SeedSequence([seed, zlib.crc32(b"shuffle")])).permutation(n)
