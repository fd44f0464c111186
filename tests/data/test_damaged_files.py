"""Damaged files are answered in one sentence, never a traceback (issue 16, point 4).

Property-based (hypothesis, derandomized: the same examples every run): a ROOT TTree, a ROOT RNTuple,
a Parquet table and the top-tagging HDF5 table, each cut short at 20+ offsets and with bytes
overwritten at 20+ places. The places are drawn from each file's own parts, located independently of
jettag (uproot's keys and basket seeks, the RNTuple anchor's envelopes, pyarrow's column-chunk
offsets, the HDF5 table's value block found by its bytes): header, directory, streamers, tree or
RNTuple metadata, every basket or page. Each damaged file is read in memory, streamed, and scored
by a tagger; the outcome must be the jets (a damage that does not change what is read, or changes
only values) or a `JetTagError`, whose sentence names the file. Anything else fails the test.

A damaged file met in a loader worker reaches the main process as that sentence; a training run that
meets one mid-run stops with it (exit 2) and its last checkpoint loads; `data.on_bad_file=skip` skips
the file and reports the jets lost in the log and in metrics.json.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import awkward as ak
import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
import uproot
from helpers import run_cli, top_tagging_table, toy_jets
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_bad_data import write_in_baskets

import jettag
from jettag.data import JetDataModule
from jettag.data.streaming import JetStreamLoader
from jettag.errors import DataError, JetTagError
from jettag.features.sets import FeatureSet

KIN = FeatureSet.from_config(
    {"name": "kin", "particle_features": ["part_pt_log", "part_deta", "part_dphi", "part_logerel"]}
)
HERE = Path(__file__).parent
EXAMPLES = settings(max_examples=24, derandomize=True, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])  # fmt: skip


# --- the files and their parts, located without jettag ---------------------------------------------


def root_parts(path) -> dict[str, list[tuple[int, int]]]:
    f = uproot.open(path)
    tree = f["tree"]
    key = f.key("tree")
    baskets = []
    for branch in tree.values():
        seeks, sizes = branch.member("fBasketSeek"), branch.member("fBasketBytes")
        baskets += [(int(s), int(s) + int(n)) for s, n in zip(seeks, sizes, strict=False) if s > 0]
    return {
        "header": [(0, f.file.fBEGIN)],
        "streamers": [(f.file.fSeekInfo, f.file.fSeekInfo + f.file.fNbytesInfo)],
        "directory": [(f.fSeekKeys, f.fSeekKeys + f.fNbytesKeys)],
        "tree metadata": [(key.fSeekKey, key.fSeekKey + key.fNbytes)],
        "basket": baskets,
    }


def rntuple_parts(path) -> dict[str, list[tuple[int, int]]]:
    f = uproot.open(path)
    anchor = f["tree"]
    key = f.key("tree")
    header = anchor.member("fSeekHeader"), anchor.member("fNBytesHeader")
    footer = anchor.member("fSeekFooter"), anchor.member("fNBytesFooter")
    return {
        "header": [(0, f.file.fBEGIN)],
        "anchor": [(key.fSeekKey, key.fSeekKey + key.fNbytes)],
        "rntuple header": [(header[0], header[0] + header[1])],
        "rntuple footer": [(footer[0], footer[0] + footer[1])],
        "pages and page lists": [(header[0] + header[1], footer[0])],
    }


def parquet_parts(path) -> dict[str, list[tuple[int, int]]]:
    size = len(open(path, "rb").read())
    meta = pq.ParquetFile(path).metadata
    chunks = []
    for i in range(meta.num_row_groups):
        for j in range(meta.num_columns):
            column = meta.row_group(i).column(j)
            start = column.dictionary_page_offset or column.data_page_offset
            chunks.append((start, start + column.total_compressed_size))
    return {
        "magic": [(0, 4)],
        "pages": chunks,
        "footer": [(size - 8 - meta.serialized_size, size)],
    }


def hdf5_parts(path, frame) -> dict[str, list[tuple[int, int]]]:
    raw = open(path, "rb").read()
    values = np.ascontiguousarray(frame.select_dtypes("float32").to_numpy()).tobytes()
    start = raw.find(values[:256])
    assert start > 0, "the float block of the table was not found in the file"
    return {
        "superblock": [(0, 96)],
        "object headers and b-trees": [(96, start)],
        "values": [(start, start + len(values))],
        "after the values": [(start + len(values), len(raw))],
    }


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    base = tmp_path_factory.mktemp("damage")
    jets = toy_jets(300, seed=11)
    made = {}
    made["root"] = write_in_baskets(base / "tree.root", jets, basket=100)
    with uproot.recreate(base / "rntuple.root") as f:
        f.mkrntuple("tree", ak.Array(dict(jets)))
    made["rntuple"] = str(base / "rntuple.root")
    made["parquet"] = str(base / "table.parquet")
    ak.to_parquet(ak.Array(dict(jets)), made["parquet"], row_group_size=100)
    frame = top_tagging_table(150, seed=12)
    frame.to_hdf(base / "table.h5", key="table", mode="w")
    made["hdf5"] = str(base / "table.h5")
    parts = {
        "root": root_parts(made["root"]),
        "rntuple": rntuple_parts(made["rntuple"]),
        "parquet": parquet_parts(made["parquet"]),
        "hdf5": hdf5_parts(made["hdf5"], frame),
    }
    return Files({fmt: Sample(path, open(path, "rb").read(), parts[fmt]) for fmt, path in made.items()})


class Sample(tuple):
    """(path, bytes, parts) of one intact file, shown by its path in hypothesis' reports."""

    def __new__(cls, path, raw, parts):
        return super().__new__(cls, (path, raw, parts))

    def __repr__(self) -> str:
        return f"Sample({self[0]!r})"


class Files(dict):
    def __repr__(self) -> str:
        return f"Files({sorted(self)})"


@pytest.fixture(scope="module")
def tagger(toy_root_files, tmp_path_factory):
    """A tiny trained tagger on kinematic inputs, which every one of the four formats provides."""
    run = tmp_path_factory.mktemp("damage_run")
    data = [f"data.{split}_files=[{path}]" for split, path in toy_root_files.items()]
    result = run_cli("jettag-train", "model=part_small", "model.embed_dims=[8,8]", "model.pair_embed_dims=[4]",
                     "model.num_heads=2", "model.num_layers=1", "trainer.max_epochs=1",
                     "trainer.limit_train_batches=1", "data.batch_size=32", "features=kin", *data,
                     f"hydra.run.dir={run}")  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    return jettag.load(run)


# --- reading a damaged file every way --------------------------------------------------------------


def read_in_memory(path, fmt):
    dm = JetDataModule(KIN, train_files=[path], chunk_size=100, batch_size=64, progress=False, **labels(fmt))
    dm.dataset("train")
    return len(dm.datasets["train"])


def read_streaming(path, fmt):
    dm = JetDataModule(KIN, train_files=[path], piece_size=100, batch_size=64, shuffle_buffer=64,
                       progress=False, streaming=True, **labels(fmt))  # fmt: skip
    return sum(len(batch) for batch in JetStreamLoader(dm.stream("train")))


def labels(fmt) -> dict:
    return {"labels": "label", "class_names": ["QCD", "Top"]} if fmt == "hdf5" else {}


def check_damaged(path, fmt, tagger):
    """Every way of reading `path` ends in its jets or one sentence naming the file."""
    outcomes = []
    for read in (read_in_memory, read_streaming, lambda p, f: len(tagger.predict(p, chunk_size=100))):
        try:
            outcomes.append(read(path, fmt))
        except JetTagError as err:
            message = str(err)
            assert path in message, message
            assert "\n" not in message and "Traceback" not in message, message
            outcomes.append(message)
    return outcomes


def damage_at(data, raw, parts):
    name = data.draw(st.sampled_from(sorted(parts)), label="part")
    start, stop = data.draw(st.sampled_from(parts[name]), label="range")
    offset = data.draw(st.integers(start, max(start, stop - 1)), label="offset")
    return name, offset


@pytest.mark.parametrize("fmt", ["root", "rntuple", "parquet", "hdf5"])
@EXAMPLES
@given(data=st.data())
def test_a_file_cut_short_anywhere_is_one_sentence(fmt, files, tagger, tmp_path, data):
    path, raw, parts = files[fmt]
    _, offset = damage_at(data, raw, parts)
    offset = max(offset, 1)
    damaged = tmp_path / f"cut_{offset}{path[path.rindex('.') :]}"
    damaged.write_bytes(raw[:offset])
    outcomes = check_damaged(str(damaged), fmt, tagger)
    # a cut file never yields every jet of the whole one, unless only trailing bytes are lost
    assert all(isinstance(o, str) for o in outcomes) or offset > len(raw) - 1024, outcomes


@pytest.mark.parametrize("fmt", ["root", "rntuple", "parquet", "hdf5"])
@EXAMPLES
@given(data=st.data())
def test_bytes_overwritten_anywhere_are_one_sentence_or_harmless(fmt, files, tagger, tmp_path, data):
    path, raw, parts = files[fmt]
    _, offset = damage_at(data, raw, parts)
    noise = data.draw(st.binary(min_size=1, max_size=16), label="bytes")
    damaged = tmp_path / f"over_{offset}{path[path.rindex('.') :]}"
    damaged.write_bytes(raw[:offset] + noise + raw[offset + len(noise) :])
    check_damaged(str(damaged), fmt, tagger)


def test_every_part_of_each_file_is_hit(files):
    """The drawn places cover each named part (the strategy draws the part first, then the place)."""
    for fmt, (_, raw, parts) in files.items():
        for name, ranges in parts.items():
            assert ranges and all(0 <= a < b <= len(raw) for a, b in ranges), (fmt, name, ranges)


# --- in a loader worker and in a training run -------------------------------------------------------


@pytest.fixture(scope="module")
def basket_damaged(tmp_path_factory):
    """A ROOT file whose third basket of part_px (entries 200-300) is overwritten."""
    base = tmp_path_factory.mktemp("worker")
    path = write_in_baskets(base / "late.root", toy_jets(300, seed=13), basket=100)
    seek = int(uproot.open(path)["tree"]["part_px"].member("fBasketSeek")[2])
    raw = bytearray(open(path, "rb").read())
    raw[seek + 40 : seek + 200] = bytes(160)
    return path, bytes(raw)


def test_a_damaged_basket_in_a_loader_worker_is_one_sentence(basket_damaged, tmp_path):
    path = tmp_path / "late.root"
    path.write_bytes(basket_damaged[1])
    dm = JetDataModule(KIN, train_files=[str(path)], piece_size=100, batch_size=32, shuffle_buffer=32,
                       progress=False, streaming=True)  # fmt: skip
    with pytest.raises(DataError) as err:
        sum(len(b) for b in JetStreamLoader(dm.stream("train"), num_workers=1))
    message = str(err.value)
    assert "\n" not in message and str(path) in message and "damaged" in message and "200-300" in message


TINY = ["model=pfn", "model.phi_dims=[8]", "model.f_dims=[8]", "features=kin", "data.batch_size=50",
        "data.streaming=true", "data.piece_size=100", "data.shuffle_buffer=50", "data.num_workers=1",
        "trainer.max_epochs=2", "test=false"]  # fmt: skip


def test_a_file_damaged_mid_run_stops_it_cleanly_with_its_checkpoint(
    basket_damaged, toy_root_files, tmp_path
):
    """The file is damaged after the first epoch (by a callback of the test): the second epoch meets it
    in the loader worker; the run stops with the sentence, and epoch 1's last.ckpt loads."""
    path = tmp_path / "late.root"
    write_in_baskets(path, toy_jets(300, seed=13), basket=100)  # the same file, intact
    replacement = tmp_path / "damaged.bin"
    replacement.write_bytes(basket_damaged[1])
    run = tmp_path / "run"
    result = run_cli(
        "jettag-train",
        *TINY,
        f"data.train_files=[{path}]",
        f"data.val_files=[{toy_root_files['val']}]",
        f"hydra.run.dir={run}",
        "+callbacks.damage._target_=damage_callback.ReplaceFileAfterFirstEpoch",
        f"+callbacks.damage.path={path}",
        f"+callbacks.damage.replacement={replacement}",
        env={"PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")])},
    )
    assert result.returncode == 2, result.stderr[-3000:]
    last = result.stderr.strip().splitlines()[-1]
    assert "damaged" in last and str(path) in last and "entries 200-300" in last, result.stderr[-3000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    checkpoint = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert checkpoint["epoch"] == 0 and checkpoint["state_dict"]


def test_on_bad_file_skip_counts_the_jets_in_the_log_and_metrics(basket_damaged, toy_root_files, tmp_path):
    damaged = tmp_path / "late.root"
    damaged.write_bytes(basket_damaged[1])
    files = [f"data.train_files=[{toy_root_files['train']},{damaged}]", f"data.val_files=[{toy_root_files['val']}]",
             f"data.test_files=[{toy_root_files['test']}]"]  # fmt: skip
    args = ["model=pfn", "model.phi_dims=[8]", "model.f_dims=[8]", "features=kin", "trainer.max_epochs=1",
            "trainer.limit_train_batches=2", "data.chunk_size=100", *files]  # fmt: skip
    stopped = run_cli("jettag-train", *args, f"hydra.run.dir={tmp_path / 'stopped'}")
    assert stopped.returncode == 2 and str(damaged) in stopped.stderr.strip().splitlines()[-1], (
        stopped.stderr[-2000:]
    )
    run = tmp_path / "run"
    result = run_cli("jettag-train", *args, "data.on_bad_file=skip", f"hydra.run.dir={run}")
    assert result.returncode == 0, result.stderr[-3000:]
    log = result.stdout + result.stderr
    assert "skipped 100 jets" in log and str(damaged) in log, log[-3000:]
    jets = json.loads((run / "metrics.json").read_text())["info"]["jets"]["train"]
    assert jets["skipped"]["bad_file"] == 100 and jets["jets"] == 600 + 200, jets


def test_the_old_key_names_the_new_one(toy_root_files, tmp_path):
    result = run_cli("jettag-train", "data.skip_bad_files=true", f"hydra.run.dir={tmp_path}")
    assert result.returncode == 2
    assert "data.on_bad_file=skip" in result.stderr.strip().splitlines()[-1]
    with pytest.raises(JetTagError, match=r"data\.on_bad_file"):
        JetDataModule(KIN, train_files=[toy_root_files["train"]], on_bad_file="ignore")
