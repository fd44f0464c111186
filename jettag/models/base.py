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

`fc_params` means the same in every model that takes it (ParT, ParticleNet, P-CNN), as in weaver-core:
[width, dropout] (or [width, dropout, "relu" | "gelu"], ReLU by default) per hidden layer between the
pooled backbone features and the final Linear. `build_head` makes them: `fc`, the hidden layers
(Linear, activation, Dropout per entry), and `head`, the final Linear. The hidden layers belong to the
BACKBONE: `forward_features` ends with them, a backbone loaded for fine-tuning brings them along, and
`reset_head` replaces only the final Linear. That is how weaver-core's published fine-tuning of
ParticleNet treats its FC 256 layer (it replaces only the last Linear), and for the published ParT
(`fc_params=[]`) the head is the one Linear either way. PFN has no `fc_params`: its network F is part
of the deep set.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
from torch import nn

ACTIVATIONS = {"relu": nn.ReLU, "gelu": nn.GELU}


def class_scores(logits: torch.Tensor) -> torch.Tensor:
    """Class probabilities (softmax, float32) from a model's logits: the one place scores are made
    (training's evaluation, jettag-predict, the exported ONNX model)."""
    return torch.softmax(logits.float(), dim=-1)


def _has_parameters(module: nn.Module) -> bool:
    return next(module.parameters(), None) is not None


def covers(prefix: str, name: str) -> bool:
    """Whether parameter `name` lies under `prefix` (`blocks.1` covers `blocks.1.fc.weight`, not `blocks.10.*`)."""
    return name == prefix or name.startswith(prefix + ".")


def fc_layers(dim: int, fc_params: Sequence[Sequence]) -> tuple[nn.Sequential, int]:
    """The hidden layers of `fc_params` on `dim` inputs: (Linear, activation, Dropout) per entry, flat
    (Linear k at index 3 k); and their output width (`dim` without any)."""
    layers: list[nn.Module] = []
    for entry in fc_params:
        if len(entry) not in (2, 3) or (len(entry) == 3 and entry[2] not in ACTIVATIONS):
            raise ValueError(
                f"fc_params entry {list(entry)}: use [width, dropout] or [width, dropout, relu|gelu]."
            )
        width, dropout, name = (*entry, "relu")[:3]
        layers += [nn.Linear(dim, int(width)), ACTIVATIONS[name](), nn.Dropout(float(dropout))]
        dim = int(width)
    return nn.Sequential(*layers), dim


class JetTagger(nn.Module):
    """Base class of jettag's models: (x, v, mask) -> logits = forward_head(forward_features(x, v, mask)).

    A subclass calls `build_head` (which sets `fc`, `head`, `num_classes` and `dim`, the width of the
    features the head reads) and implements `forward_features`, ending it with `self.fc`. It
    overrides `layer_groups` where the default (below) does not say how its layers are stacked.
    """

    head_modules: tuple[str, ...] = ("head",)

    def build_head(self, dim: int, num_classes: int, fc_params: Sequence[Sequence] = ()) -> None:
        """`fc`, the hidden layers of `fc_params` (backbone) on `dim` pooled features; `head`, the final Linear."""
        self.fc, self.dim = fc_layers(dim, fc_params)
        self.num_classes = num_classes
        self.head = nn.Linear(self.dim, num_classes)

    def forward_features(self, x: torch.Tensor, v: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """The backbone: (B, N, C), (B, N, 4), (B, N) -> (B, D)."""
        raise NotImplementedError

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        return self.head(features)

    def forward(self, x: torch.Tensor, v: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Class logits (B, num_classes); no softmax."""
        return self.forward_head(self.forward_features(x, v, mask))

    def reset_head(self, num_classes: int) -> None:
        """A new, freshly initialised final Linear for `num_classes`, on the model's device (`fc` stays)."""
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
