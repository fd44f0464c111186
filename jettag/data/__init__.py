"""Reading jets from files into padded tensors: reader -> JetBuilder -> JetDataset -> JetDataModule."""

from jettag.data.datamodule import JetDataModule, read_jets
from jettag.data.dataset import JetBatchSampler, JetDataset
from jettag.data.jets import JetArrays, JetBuilder
from jettag.data.labels import LabelSpec
from jettag.data.reader import JetFile, resolve_files

__all__ = [
    "JetArrays",
    "JetBatchSampler",
    "JetBuilder",
    "JetDataModule",
    "JetDataset",
    "JetFile",
    "LabelSpec",
    "read_jets",
    "resolve_files",
]
