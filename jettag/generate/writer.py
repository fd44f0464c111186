"""Writing generated jets to a JetClass-schema ROOT file with uproot: output-path checks, the
compression, and optional rounding of the continuous particle branches."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import awkward as ak
import numpy as np

from jettag.errors import ConfigError
from jettag.generate.branches import AUX_FIELDS, BRANCHES, JET_BRANCHES, LABEL_BRANCHES, PARTICLE_FIELDS
from jettag.generate.driver import GeneratedJets

COMPRESSIONS = ("lzma", "zlib", "zstd", "lz4", "none")


def check_output_path(path: str | os.PathLike) -> str:
    """Fail early, with one sentence, when `path` cannot be written."""
    path = os.path.expanduser(os.fspath(path))
    directory = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path):
        raise ConfigError(f"the output '{path}' is a directory; give a file name, e.g. '{path}/jets.root'.")
    if not os.path.isdir(directory):
        raise ConfigError(
            f"cannot write '{path}': the directory '{directory}' does not exist; create it first."
        )
    if not os.access(directory, os.W_OK) or (os.path.exists(path) and not os.access(path, os.W_OK)):
        raise ConfigError(f"cannot write '{path}': permission denied; choose another output path.")
    return path


def _compression(name: str, level: int | None):
    import uproot

    name = name.lower()
    if name not in COMPRESSIONS:
        raise ConfigError(f"unknown compression '{name}'; choose from {', '.join(COMPRESSIONS)}.")
    if name == "none":
        return None
    kind, default_level = {"lzma": (uproot.LZMA, 9), "zlib": (uproot.ZLIB, 6), "zstd": (uproot.ZSTD, 5),
                           "lz4": (uproot.LZ4, 4)}[name]  # fmt: skip
    return kind(default_level if level is None else level)


# Continuous particle branches that `mantissa_bits` rounds (flags, charge and errors are exact already).
ROUNDED_FIELDS = ("px", "py", "pz", "energy", "deta", "dphi", "d0val", "dzval")


def round_mantissa(values: np.ndarray, bits: int) -> np.ndarray:
    """float32 `values` rounded to `bits` mantissa bits (relative precision 2**-(bits+1)).

    The low mantissa bits of a float are noise for physics and incompressible; zeroing them is
    what ROOT's Float16_t / Double32_t do, and lets the compressor shrink the file ~35%.
    """
    if not 1 <= bits <= 22:
        raise ConfigError(f"mantissa_bits must lie in 1..22 (float32 has 23), not {bits}.")
    raw = np.ascontiguousarray(values, dtype=np.float32).view(np.uint32)
    drop = np.uint32(23 - bits)
    half = np.uint32(1 << (23 - bits - 1))
    finite = np.isfinite(values)
    rounded = ((raw + half) >> drop) << drop  # round half up in magnitude; carries into the exponent
    return np.where(finite, rounded, raw).view(np.float32)


def write_jetclass_root(
    path: str | os.PathLike,
    arrays: Mapping[str, Any] | GeneratedJets,
    compression: str = "lzma",
    level: int | None = None,
    basket_jets: int = 10_000,
    treename: str = "tree",
    mantissa_bits: int | None = None,
    aux: bool = True,
) -> int:
    """Write JetClass branches to a ROOT tree (one entry per jet); returns the file size in bytes.

    Particle branches share one counter branch (`npart`), the aux_genpart_* ones another
    (`naux_genpart`). Jets go in baskets of `basket_jets` entries. `mantissa_bits` rounds the
    continuous particle branches (see `round_mantissa`); `aux=False` leaves out the generator truth.
    """
    import uproot

    if isinstance(arrays, GeneratedJets):
        arrays = arrays.arrays
    missing = [b for b in BRANCHES if b not in arrays and (aux or not b.startswith("aux_"))]
    if missing:
        raise ConfigError(f"cannot write a JetClass file without the branches {', '.join(missing)}.")
    path = check_output_path(path)
    codec = _compression(compression, level)
    n_jets = len(arrays["jet_pt"])
    if mantissa_bits is not None:
        arrays = dict(arrays)
        for name in ROUNDED_FIELDS:
            column = arrays[f"part_{name}"]
            flat = round_mantissa(ak.to_numpy(ak.flatten(column)), mantissa_bits)
            arrays[f"part_{name}"] = ak.unflatten(flat, ak.num(column))
    groups = (("part", PARTICLE_FIELDS), ("aux_genpart", AUX_FIELDS)) if aux else (("part", PARTICLE_FIELDS),)

    def chunk(start: int, stop: int) -> dict[str, Any]:
        data: dict[str, Any] = {}
        for group, names in groups:
            data[group] = ak.zip({name: arrays[f"{group}_{name}"][start:stop] for name in names})
        for name in JET_BRANCHES + LABEL_BRANCHES:
            data[name] = np.asarray(arrays[name][start:stop])
        return data

    try:
        with uproot.recreate(path, compression=codec) as file:
            # mktree names the fields of the jagged records part_px, ... (JetClass), with counters npart, ...
            tree = file.mktree(treename, chunk(0, min(basket_jets, n_jets)))
            for start in range(basket_jets, n_jets, basket_jets):
                tree.extend(chunk(start, min(start + basket_jets, n_jets)))
    except OSError as err:
        raise ConfigError(
            f"cannot write '{path}' ({err.strerror or err}); choose another output path."
        ) from None
    return os.path.getsize(path)
