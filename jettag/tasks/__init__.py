"""Lightning tasks: how a model is trained (supervised classification; pretraining and fine-tuning later)."""

from jettag.tasks.classification import JetClassifier
from jettag.tasks.schedules import flat_then_decay

__all__ = ["JetClassifier", "flat_then_decay"]
