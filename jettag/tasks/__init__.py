"""Lightning tasks: how a model is trained (supervised classification, fine-tuning, self-supervised pretraining)."""

from jettag.tasks.classification import JetClassifier
from jettag.tasks.finetune import FineTuner
from jettag.tasks.pretrain import MaskedParticlePretrainer
from jettag.tasks.schedules import flat_then_decay

__all__ = ["FineTuner", "JetClassifier", "MaskedParticlePretrainer", "flat_then_decay"]
