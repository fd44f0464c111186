"""Learning-rate schedules, stepped once per optimizer step."""

from __future__ import annotations

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR


def flat_then_decay(
    optimizer: Optimizer, total_steps: int, flat_fraction: float = 0.7, final_factor: float = 0.01
) -> LambdaLR:
    """The ParT recipe: the learning rate stays flat for `flat_fraction` of the steps, then decays
    exponentially to `final_factor` times its initial value at the last step."""
    flat = int(flat_fraction * total_steps)
    decay = max(total_steps - flat, 1)

    def factor(step: int) -> float:
        if step < flat:
            return 1.0
        return final_factor ** (min(step - flat, decay) / decay)

    return LambdaLR(optimizer, factor)
