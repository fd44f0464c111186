"""Lightning tasks: how a model is trained (supervised classification, fine-tuning, self-supervised pretraining)."""

from jettag.tasks.classification import JetClassifier
from jettag.tasks.contrastive import ContrastivePretrainer
from jettag.tasks.finetune import FineTuner
from jettag.tasks.pretrain import MaskedParticlePretrainer
from jettag.tasks.schedules import flat_then_decay, warmup_cosine

__all__ = [
    "ContrastivePretrainer",
    "FineTuner",
    "JetClassifier",
    "MaskedParticlePretrainer",
    "flat_then_decay",
    "warmup_cosine",
]
