"""sha1 over every batch the data pipeline makes of a fixed set of files: a refactoring of the read path
must leave these unchanged.

    python scripts/batch_hashes.py [--dir DIR] [--jets-per-file 3000] [--files 3] [--out hashes.json]

Writes JetClass-schema ROOT files of toy jets (fixed seed; ten classes, one-hot labels, with a
multiplicity above max_particles for some jets so that truncation is exercised), then, for each of

- in memory and streaming,
- without and with reweighting (flat in jet pT),
- training (shuffled) and validation (in order) batches, two epochs each,

hashes the padded particle features, four-vectors, mask and class labels of every batch, in order,
and (for streaming, whose ids were always global) the jet ids; and the output of `predict_files` for the
last file scored by a fixed PFN. Prints one line per configuration and writes them as JSON, so that two
runs (before and after a change) can be compared with `diff`.
"""

from __future__ import annotations

import argparse
import hashlib
import inspect
import json
import sys
import tempfile
from pathlib import Path

import awkward as ak
import numpy as np
import uproot

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

LABELS = ["label_QCD", "label_Hbb", "label_Hcc", "label_Hgg", "label_H4q", "label_Hqql", "label_Zqq",
          "label_Wqq", "label_Tbqq", "label_Tbl"]  # fmt: skip


def write_files(directory: Path, files: int, jets_per_file: int) -> list[str]:
    from helpers import toy_jets

    paths = []
    for i in range(files):
        branches = toy_jets(jets_per_file, seed=100 + i, classes=LABELS)
        particles = {k[len("part_") :]: v for k, v in branches.items() if k.startswith("part_")}
        data = {k: v for k, v in branches.items() if not k.startswith("part_")}
        data["part"] = ak.zip(particles)
        path = directory / f"set_{i}.root"
        with uproot.recreate(path) as f:
            # several baskets per file, so that streaming cuts pieces on basket boundaries
            tree = f.mktree(
                "tree", {k: v.type if isinstance(v, ak.Array) else v.dtype for k, v in data.items()}
            )
            for start in range(0, jets_per_file, 1000):
                tree.extend({k: v[start : start + 1000] for k, v in data.items()})
        paths.append(str(path))
    return paths


def digest(batches, with_ids: bool) -> tuple[str, int]:
    sha = hashlib.sha1()
    count = 0
    for batch in batches:
        fields = batch if isinstance(batch, dict) else vars(batch)
        for key in ("x", "v", "mask", "y"):
            sha.update(np.ascontiguousarray(fields[key].numpy()).tobytes())
        if with_ids:
            ids = fields.get("entry", fields.get("index"))
            sha.update(np.ascontiguousarray(ids.numpy()).tobytes())
        count += 1
    return sha.hexdigest(), count


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--dir", help="where to write the files (default: a temporary directory)")
    parser.add_argument("--files", type=int, default=3)
    parser.add_argument("--jets-per-file", type=int, default=3000)
    parser.add_argument("--out", help="write the hashes to this JSON file")
    args = parser.parse_args(argv)

    from omegaconf import OmegaConf

    from jettag.data import JetDataModule
    from jettag.features.sets import FeatureSet
    from jettag.paths import config_dir

    features = FeatureSet.from_config(
        {
            **OmegaConf.to_container(OmegaConf.load(config_dir() / "features" / "kinpid.yaml")),
            "max_particles": 48,
        }
    )
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(args.dir or tmp)
        directory.mkdir(parents=True, exist_ok=True)
        paths = write_files(directory, args.files, args.jets_per_file)
        reweight = {
            "mode": "flat",
            "variables": ["jet_pt"],
            "bins": {"jet_pt": [550, 570, 590, 610, 630, 650]},
        }
        results = {}
        for streaming in (False, True):
            for weighted in (False, True):
                # streamed pieces of 1000 jets (data.piece_size; data.chunk_size before it existed)
                pieces = (
                    {"piece_size": 1000}
                    if "piece_size" in inspect.signature(JetDataModule).parameters
                    else {}
                )
                data = JetDataModule(
                    features, train_files=paths[:-1], val_files=paths[-1:], labels=LABELS, batch_size=256,
                    eval_batch_size=300, chunk_size=1000, shuffle_buffer=2000, streaming=streaming, seed=3,
                    progress=False, observers=["jet_pt"], reweight=reweight if weighted else None, **pieces,
                )  # fmt: skip
                data.setup("fit")
                for split in ("train", "val"):
                    loader = data.train_dataloader() if split == "train" else data.val_dataloader()
                    for epoch in range(2):
                        if hasattr(loader, "batch_sampler") and hasattr(loader.batch_sampler, "set_epoch"):
                            loader.batch_sampler.set_epoch(epoch)
                        elif hasattr(getattr(loader, "sampler", None), "set_epoch"):
                            loader.sampler.set_epoch(epoch)
                        name = (f"{'streaming' if streaming else 'memory'} {'reweighted' if weighted else 'plain'} "
                                f"{split} epoch {epoch}")  # fmt: skip
                        results[name] = digest(loader, with_ids=streaming)
                        print(f"{name}: {results[name][0]} ({results[name][1]} batches)", flush=True)
        # a file without the jet axis and part_deta / part_dphi: all derived from the particles
        stripped = directory / "stripped.root"
        arrays = uproot.open(paths[0])["tree"].arrays()
        with uproot.recreate(stripped) as f:
            f["tree"] = {name: arrays[name] for name in arrays.fields
                         if not name.startswith(("jet_", "part_deta", "part_dphi", "npart"))}  # fmt: skip
        data = JetDataModule(features, test_files=[str(stripped)], labels=LABELS, eval_batch_size=300,
                             progress=False, observers=["jet_pt", "jet_eta", "jet_mass", "jet_nparticles"])  # fmt: skip
        data.setup("test")
        name = "memory derived-axis test"
        batches = list(data.test_dataloader())
        sha = hashlib.sha1(digest(batches, with_ids=False)[0].encode())
        for key, values in sorted(data.dataset("test").jets.observers.items()):
            sha.update(key.encode() + np.ascontiguousarray(values).tobytes())
        results[name] = (sha.hexdigest(), len(batches))
        print(f"{name}: {results[name][0]} ({results[name][1]} batches)", flush=True)

        # jettag-predict's scores of the last file by a fixed PFN
        import torch

        from jettag.inference import TrainedModel, predict_files
        from jettag.models import ParticleFlowNetwork

        torch.manual_seed(0)
        model = ParticleFlowNetwork(
            features.num_features, len(LABELS), phi_dims=(16, 16), f_dims=(16,)
        ).eval()
        trained = TrainedModel(model, features, LABELS, 0, {}, Path("toy"))
        out = directory / "scores.root"
        predict_files(trained, paths[-1:], out, "tree", observers=["jet_pt"], chunk_size=700, progress=False)
        arrays = uproot.open(out)["Events"].arrays(library="np")
        sha = hashlib.sha1()
        for name in sorted(arrays):
            sha.update(name.encode() + np.ascontiguousarray(arrays[name]).tobytes())
        results["predict"] = (sha.hexdigest(), len(arrays["entry"]))
        print(f"predict: {results['predict'][0]} ({results['predict'][1]} rows)", flush=True)
        if args.out:
            Path(args.out).write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
