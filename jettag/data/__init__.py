"""Reading jets from files into padded batches: reader -> JetBuilder -> JetSource (the one read path)
-> JetDataset (in memory) or JetStream (streamed, sharded over workers and ranks) -> JetBatch,
assembled by JetDataModule."""

from jettag.data.arrays import JetArrays
from jettag.data.batch import JetBatch, pad_jets
from jettag.data.datamodule import JetDataModule
from jettag.data.dataset import JetBatchSampler, JetDataset
from jettag.data.expressions import Expression
from jettag.data.jets import JetBuilder
from jettag.data.labels import LabelSpec
from jettag.data.reader import JetFile, resolve_entries, resolve_files
from jettag.data.source import JetSource, read_jets
from jettag.data.streaming import JetStream, JetStreamLoader

__all__ = [
    "Expression",
    "JetArrays",
    "JetBatch",
    "JetBatchSampler",
    "JetBuilder",
    "JetDataModule",
    "JetDataset",
    "JetFile",
    "JetSource",
    "JetStream",
    "JetStreamLoader",
    "LabelSpec",
    "pad_jets",
    "read_jets",
    "resolve_entries",
    "resolve_files",
]
