"""What every jettag model offers the tasks: a backbone, a classifier head, and their split.

A model is a backbone (`forward_features`: jets -> one vector per jet) followed by a head
(`forward_head`: that vector -> class logits). Fine-tuning replaces the head (`reset_head`), trains it
faster than the backbone or alone (a linear probe), and may scale the backbone's learning rate layer
by layer. The model, not the task, knows which of its modules form the head and how its layers are
stacked; `JetTagger` declares that:

- `head_modules`: the names of the top-level modules (or parameters) that form the classifier head;
- `layer_groups()`: the backbone's parameter-name prefixes, grouped by layer and ordered from the
  input upwards (a prefix `blocks.0` covers `blocks.0.*`);
- `layer_depths()`: {backbone parameter name: index of its group}, derived from `layer_groups()`.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import nn


def class_scores(logits: torch.Tensor) -> torch.Tensor:
    """Class probabilities (softmax, float32) from a model's logits: the one place scores are made
    (training's evaluation, jettag-predict, the exported ONNX model)."""
    return torch.softmax(logits.float(), dim=-1)


def _has_parameters(module: nn.Module) -> bool:
    return next(module.parameters(), None) is not None


def covers(prefix: str, name: str) -> bool:
    """Whether parameter `name` lies under `prefix` (`blocks.1` covers `blocks.1.fc.weight`, not `blocks.10.*`)."""
    return name == prefix or name.startswith(prefix + ".")


class JetTagger(nn.Module):
    """Base class of jettag's models: (x, v, mask) -> logits = forward_head(forward_features(x, v, mask)).

    A subclass builds `self.head` (and sets `self.num_classes`, and `self.dim`, the width of the
    features the head reads, which the default `reset_head` uses) and implements `forward_features`.
    It overrides `layer_groups` where the default (below) does not say how its layers are stacked.
    """

    head_modules: tuple[str, ...] = ("head",)

    def forward_features(self, x: torch.Tensor, v: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """The backbone: (B, N, C), (B, N, 4), (B, N) -> (B, D)."""
        raise NotImplementedError

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        return self.head(features)

    def forward(self, x: torch.Tensor, v: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Class logits (B, num_classes); no softmax."""
        return self.forward_head(self.forward_features(x, v, mask))

    def reset_head(self, num_classes: int) -> None:
        """A new, freshly initialised linear head for `num_classes`, on the model's device."""
        device = next(self.parameters()).device
        self.num_classes = num_classes
        self.head = nn.Linear(self.dim, num_classes).to(device)

    def is_head(self, name: str) -> bool:
        """Whether parameter (or state-dict key) `name` belongs to the head."""
        return any(covers(module, name) for module in self.head_modules)

    def _items(self, name: str) -> Iterator[tuple[str]]:
        """One group per item with parameters of the ModuleList / Sequential `name`."""
        for index, module in enumerate(getattr(self, name)):
            if _has_parameters(module):
                yield (f"{name}.{index}",)

    def layer_groups(self) -> list[tuple[str, ...]]:
        """The backbone's parameter-name prefixes, one tuple per layer, from the input upwards.

        Default: the top-level parameters and modules outside the head in the order they were
        created, each item of a ModuleList or Sequential a layer of its own. The models create
        their layers from the input upwards; a model whose order differs overrides this.
        """
        groups: list[tuple[str, ...]] = [(name,) for name, _ in self.named_parameters(recurse=False)]
        for name, module in self.named_children():
            if name in self.head_modules or not _has_parameters(module):
                continue
            if isinstance(module, (nn.ModuleList, nn.Sequential)):
                groups.extend(self._items(name))
            else:
                groups.append((name,))
        return [group for group in groups if not any(name in self.head_modules for name in group)]

    def layer_depths(self) -> dict[str, int]:
        """{backbone parameter name: depth}, 0 for the layer nearest the input (see `layer_groups`)."""
        groups = self.layer_groups()
        depths = {}
        for name, _ in self.named_parameters():
            if self.is_head(name):
                continue
            for depth, prefixes in enumerate(groups):
                if any(covers(prefix, name) for prefix in prefixes):
                    depths[name] = depth
                    break
            else:
                raise ValueError(f"{type(self).__name__}.layer_groups() leaves out the parameter '{name}'")
        return depths
