"""Learning-rate schedules, stepped once per optimizer step."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, replace

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR

from jettag.errors import ConfigError


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


def warmup_cosine(
    optimizer: Optimizer, total_steps: int, warmup_fraction: float = 0.05, final_factor: float = 0.01
) -> LambdaLR:
    """Linear warm-up over `warmup_fraction` of the steps, then a cosine from 1 down to `final_factor`
    at the last step (the pretraining recipes' schedule).

    Optimizer step s (0 for the first) of a run of T steps trains with lr x (s + 1) / W while s < W,
    with W = max(int(warmup_fraction T), 1) warm-up steps, then with lr x final_factor + (1 - final_factor)
    (1 + cos(pi (s - W) / (T - 1 - W))) / 2: 1 at step W, `final_factor` at the last step T - 1."""
    if not 0 <= warmup_fraction < 1:
        raise ConfigError(f"task.scheduler.warmup_fraction={warmup_fraction} must lie in [0, 1).")
    warmup = max(int(warmup_fraction * total_steps), 1)
    span = max(total_steps - 1 - warmup, 1)  # the last step, T - 1, ends the cosine

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = min(step - warmup, span) / span
        return final_factor + (1 - final_factor) * 0.5 * (1 + math.cos(math.pi * progress))

    return LambdaLR(optimizer, factor)


STEP_KEYS = ("freeze_steps", "ramp_steps", "warmup_steps")
DECAYS = ("constant", "cosine")


def _steps_value(value, key: str) -> int | float:
    """A number of steps (an integer >= 0) or a fraction of the run's steps (a float in (0, 1))."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(
            f"{key}={value!r} must be a number of steps (an integer >= 0) or a fraction of the run (0 < f < 1)."
        )
    if value < 0:
        raise ConfigError(f"{key}={value} is negative; give a number of steps >= 0 or a fraction 0 < f < 1.")
    if isinstance(value, float) and value >= 1:
        if not value.is_integer():
            raise ConfigError(
                f"{key}={value} is neither a whole number of steps nor a fraction of the run (0 < f < 1)."
            )
        return int(value)
    return value


@dataclass(frozen=True)
class FineTuneSchedule:
    """The learning-rate factor of each optimizer step while fine-tuning (`task.schedule`).

    Step s (0 for the first optimizer step) of a run of T steps trains with lr x factor(s), where

    - every group: x min(1, (s + 1) / warmup_steps) (linear warm-up; none when warmup_steps = 0);
    - backbone groups only: x 0 while s < freeze_steps (frozen), then x min(1, (s - freeze_steps + 1)
      / ramp_steps) (linear ramp; none when ramp_steps = 0);
    - decay `cosine`: from start = max(warmup_steps, freeze_steps + ramp_steps) on, every group x
      final_factor + (1 - final_factor) (1 + cos(pi (s - start) / (T - 1 - start))) / 2, which is 1
      at the start and final_factor at the last step; `constant`: x 1.

    A step count below 1 (e.g. 0.1) is a fraction of the run's T steps (`resolve`).
    """

    freeze_steps: int | float = 0
    ramp_steps: int | float = 0
    warmup_steps: int | float = 0
    decay: str = "constant"
    final_factor: float = 0.0
    total_steps: int | None = None  # set by `resolve`

    @classmethod
    def from_config(cls, cfg: Mapping | None, where: str = "task.schedule") -> FineTuneSchedule:
        cfg = dict(cfg or {})
        known = (*STEP_KEYS, "decay", "final_factor")
        for key in cfg:
            if key not in known:
                raise ConfigError(f"{where} has no setting '{key}'; the settings are {', '.join(known)}.")
        steps = {key: _steps_value(cfg.get(key, 0), f"{where}.{key}") for key in STEP_KEYS}
        decay = cfg.get("decay", "constant")
        if decay not in DECAYS:
            raise ConfigError(f"{where}.decay={decay!r} is not one of {', '.join(DECAYS)}.")
        final = cfg.get("final_factor", 0.0)
        if isinstance(final, bool) or not isinstance(final, (int, float)) or not 0 <= final <= 1:
            raise ConfigError(f"{where}.final_factor={final!r} must be a number from 0 to 1.")
        return cls(**steps, decay=decay, final_factor=float(final))

    @property
    def constant(self) -> bool:
        """Whether every factor is 1 at every step (no scheduler needed)."""
        return not any(getattr(self, key) for key in STEP_KEYS) and self.decay == "constant"

    def resolve(self, total_steps: int) -> FineTuneSchedule:
        """The schedule of a run of `total_steps` optimizer steps, fractions turned into steps."""

        def steps(value: int | float) -> int:
            return round(value * total_steps) if isinstance(value, float) and value < 1 else int(value)

        return replace(self, **{key: steps(getattr(self, key)) for key in STEP_KEYS}, total_steps=total_steps)

    def factor(self, step: int, backbone: bool) -> float:
        """The lr factor of optimizer step `step` for a backbone group or a head group (resolved schedule)."""
        factor = 1.0
        if self.warmup_steps > 0:
            factor *= min(1.0, (step + 1) / self.warmup_steps)
        if backbone:
            if step < self.freeze_steps:
                return 0.0
            if self.ramp_steps > 0:
                factor *= min(1.0, (step - self.freeze_steps + 1) / self.ramp_steps)
        if self.decay == "cosine":
            start = max(self.warmup_steps, self.freeze_steps + self.ramp_steps)
            if step > start:
                progress = min(1.0, (step - start) / max(self.total_steps - 1 - start, 1))
                cosine = 0.5 * (1 + math.cos(math.pi * progress))  # 1 -> 0
                factor *= self.final_factor + (1 - self.final_factor) * cosine
        return factor
