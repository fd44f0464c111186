"""jettag-convert: the original top-tagging HDF5 table to Parquet or ROOT in the JetClass-like schema.

    jettag-convert train.h5 train.parquet
    jettag-convert test.h5 test.root --chunk-size 50000

Reads the pandas table (`E_i PX_i PY_i PZ_i`, `is_signal_new`) chunk by chunk and writes one row per
jet: jagged `part_px part_py part_pz part_energy part_deta part_dphi` (zero-padding slots dropped,
pT order kept), `jet_pt jet_eta jet_phi jet_energy jet_mass jet_nparticles` summed from the
constituents, the integer `label` (1 = top) and the one-hot `label_QCD label_Tbqq`. The output reads
with `data=toplandscape` (integer label) or with `data.labels=[label_QCD,label_Tbqq]`. Memory is
bounded by the chunk size.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import awkward as ak
from tqdm.auto import tqdm

from jettag.cli.errors import report_user_errors
from jettag.data.reader import JetFile
from jettag.data.toptagging import TOP_HDF5_BRANCHES
from jettag.errors import ConfigError, DataError

FORMATS = {".parquet": "parquet", ".root": "root"}


def convert(source: str | Path, output: str | Path, chunk_size: int = 100_000, treename: str = "tree",
            progress: bool = True) -> int:  # fmt: skip
    """Convert `source` into `output` (format from its suffix); returns the number of jets written."""
    source, output = Path(source), Path(output)
    fmt = FORMATS.get(output.suffix.lower())
    if fmt is None:
        raise ConfigError(f"output '{output}': name it .parquet or .root to choose the format.")
    if chunk_size < 1:
        raise ConfigError(f"--chunk-size must be at least 1, not {chunk_size}.")
    if not source.is_file():
        raise DataError(f"the input '{source}' does not exist; check the path.")
    if output.exists() and output.resolve() == source.resolve():
        raise ConfigError(f"output '{output}' is the input file; write to another file.")
    table = JetFile(str(source), treename)
    if table.format != "hdf5":
        raise DataError(f"'{source}' is a {table.format} file, not the top-tagging HDF5 table.")
    output.parent.mkdir(parents=True, exist_ok=True)
    written = 0
    with tqdm(
        total=table.num_entries, unit=" jets", desc=f"converting {source.name}", disable=not progress
    ) as bar:
        if fmt == "parquet":
            written = _to_parquet(table, output, chunk_size, bar)
        else:
            written = _to_root(table, output, chunk_size, treename, bar)
    return written


def _to_parquet(table: JetFile, output: Path, chunk_size: int, bar) -> int:
    import pyarrow.parquet as pq

    writer, written = None, 0
    try:
        for chunk in table.iterate(TOP_HDF5_BRANCHES, chunk_size):
            arrow = ak.to_arrow_table(chunk.arrays[list(TOP_HDF5_BRANCHES)], extensionarray=False)
            if writer is None:
                writer = pq.ParquetWriter(output, arrow.schema)
            writer.write_table(arrow)
            written += len(chunk.arrays)
            bar.update(len(chunk.arrays))
    finally:
        if writer is not None:
            writer.close()
    return written


def _to_root(table: JetFile, output: Path, chunk_size: int, treename: str, bar) -> int:
    import uproot

    written, tree = 0, None
    with uproot.recreate(output) as out:
        for chunk in table.iterate(TOP_HDF5_BRANCHES, chunk_size):
            arrays = chunk.arrays
            data = {name: arrays[name] for name in TOP_HDF5_BRANCHES if not name.startswith("part_")}
            # one counter branch for all particle branches, as in JetClass: part_px, part_py, ...
            data["part"] = ak.zip({name[len("part_") :]: arrays[name] for name in TOP_HDF5_BRANCHES
                                   if name.startswith("part_")})  # fmt: skip
            if tree is None:
                tree = out.mktree(treename, {k: v.type for k, v in data.items()})
            tree.extend(data)
            written += len(arrays)
            bar.update(len(arrays))
    return written


@report_user_errors("jettag-convert")
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="jettag-convert",
        description="Convert the top-tagging HDF5 table (E_i PX_i PY_i PZ_i, is_signal_new) to Parquet or ROOT.",
    )
    parser.add_argument("input", help="the pandas HDF5 file (key 'table')")
    parser.add_argument("output", help="output file: .parquet or .root")
    parser.add_argument("--chunk-size", type=int, default=100_000, help="jets per chunk (default 100000)")
    parser.add_argument("--treename", default="tree", help="tree name of a ROOT output (default tree)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    n = convert(args.input, args.output, args.chunk_size, args.treename, progress=not args.no_progress)
    print(f"jettag-convert: wrote {n} jets to {args.output}")


if __name__ == "__main__":
    main()
