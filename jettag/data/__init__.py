"""Reading jets from files into padded tensors: reader -> JetBuilder -> JetDataset (in memory) or
JetStream (streamed, sharded over workers and ranks) -> JetDataModule."""

from jettag.data.datamodule import JetDataModule, read_jets
from jettag.data.dataset import JetBatchSampler, JetDataset
from jettag.data.expressions import Expression
from jettag.data.jets import JetArrays, JetBuilder
from jettag.data.labels import LabelSpec
from jettag.data.reader import JetFile, resolve_entries, resolve_files
from jettag.data.streaming import JetStream, JetStreamLoader

__all__ = [
    "Expression",
    "JetArrays",
    "JetBatchSampler",
    "JetBuilder",
    "JetDataModule",
    "JetDataset",
    "JetFile",
    "JetStream",
    "JetStreamLoader",
    "LabelSpec",
    "read_jets",
    "resolve_entries",
    "resolve_files",
]
