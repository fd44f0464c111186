"""Overrides shared by the cluster tests: a ParT of ~8k parameters on at most 16 particles."""

from __future__ import annotations

TINY = ["features.max_particles=16", "model.num_layers=1", "model.embed_dims=[16,16,16]",
        "model.pair_embed_dims=[8,8]", "trainer.accelerator=cpu", "data.batch_size=16",
        "data.eval_batch_size=16"]  # fmt: skip


def data_overrides(files: dict) -> list[str]:
    return [f"data.{split}_files=[{path}]" for split, path in files.items()]
