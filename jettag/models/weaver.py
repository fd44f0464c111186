"""Load weaver-core ParticleTransformer weights (e.g. the published ParT_kin/kinpid/full.pt) into jettag's ParT.

weaver-core (https://github.com/hqucms/weaver-core) trains ParT inside a wrapper module whose
attribute is `mod`, so its files name tensors `mod.embed.input_bn.weight`, `mod.blocks.0.attn...`;
weaver versions that used `nn.MultiheadAttention` saved the packed projection as
`attn.in_proj_weight` / `attn.in_proj_bias` instead of `attn.in_proj.weight` / `.bias`. Both
forms load. Every tensor is mapped explicitly (the table is `weaver_key_map`):

    weaver                            jettag
    embed.input_bn.*                  embed.input_bn.*
    embed.embed.<k>.*                 embed.mlp.<k>.*          (LayerNorm, Linear, GELU per width)
    pair_embed.embed.<k>.*            pair_embed.mlp.<k>.*     (1x1 Conv1d weight (out, in, 1) -> Linear (out, in))
    blocks.<i>.c_attn                 blocks.<i>.head_scale
    blocks.<i>.w_resid                blocks.<i>.resid_scale
    blocks.<i>.<other>                blocks.<i>.<other>       (same for cls_blocks)
    cls_token, norm.*                 cls_token, norm.*
    fc.0.*  (fc_params=[])            head.*
    fc.<k>.0.*, fc.<K>.*              head.<k>.0.*, head.<K>.*  (hidden layers from fc_params)

What a state dict cannot tell, the jettag model must be built with: the pair embedding's last
GELU (weaver `use_pre_activation_pair=False`, as in the published models, is jettag's default
`pair_final_activation=True`; weaver's own default `True` is `pair_final_activation=False`) and
the activations of a hidden head (`head_layers`). Widths, depths, heads and input size are
checked through the tensor shapes.

Input-level differences that do not affect the weights: weaver takes channels-first tensors
(x (B, C, N), v (B, 4, N), mask (B, 1, N)); jettag takes them channels-last with a boolean mask.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from jettag.errors import ConfigError
from jettag.models.part import ParticleTransformer

log = logging.getLogger(__name__)

# weaver-core ParticleTransformer arguments of the published models (particle_transformer's
# networks/example_ParticleTransformer.py); jettag's ParticleTransformer defaults are this model.
REFERENCE_WEAVER_KWARGS = dict(
    pair_input_dim=4,
    use_pre_activation_pair=False,
    embed_dims=[128, 512, 128],
    pair_embed_dims=[64, 64, 64],
    num_heads=8,
    num_layers=8,
    num_cls_layers=2,
    cls_block_params={"dropout": 0, "attn_dropout": 0, "activation_dropout": 0},
    fc_params=[],
)
# Prefixes wrappers put in front of the model's own names: weaver's `mod`, DataParallel/DDP's
# `module`, torch.compile's `_orig_mod`.
WRAPPER_PREFIXES = ("mod.", "module.", "_orig_mod.")
# Buffers that are not weights: weaver's sequence trimmer counts warm-up steps (not saved by
# recent versions); BatchNorm's step counter only matters for momentum=None, absent in older files.
IGNORED_KEYS = ("trimmer._counter",)
OPTIONAL_SUFFIX = "num_batches_tracked"
BLOCK_RENAMES = {"head_scale": "c_attn", "resid_scale": "w_resid"}


def read_weaver_state_dict(
    source: str | Path | Mapping[str, torch.Tensor],
) -> tuple[dict[str, torch.Tensor], str]:
    """(state dict with wrapper prefixes removed, a name for messages) from a path or a mapping.

    A file may hold the state dict itself (as weaver saves it) or a dict with it under
    `state_dict` or `model`.
    """
    if isinstance(source, Mapping):
        state, name = source, "the given state dict"
    else:
        path = Path(source)
        name = f"'{path}'"
        if not path.is_file():
            raise ConfigError(f"model.weights: the weights file {name} does not exist; check the path.")
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:
            raise ConfigError(
                f"cannot read the weights file {name} ({err}); is it a PyTorch state dict?"
            ) from None
    if isinstance(state, Mapping):
        for key in ("state_dict", "model"):
            if isinstance(state.get(key), Mapping):
                state = state[key]
                break
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ConfigError(f"{name} is not a state dict of tensors (as weaver-core saves a model).")
    return {_strip_prefixes(k): v for k, v in state.items()}, name


def _strip_prefixes(key: str) -> str:
    stripped = True
    while stripped:
        stripped = False
        for prefix in WRAPPER_PREFIXES:
            if key.startswith(prefix):
                key, stripped = key[len(prefix) :], True
    return key


def _weaver_names(key: str) -> list[str]:
    """The weaver names (new and old naming) of one jettag state-dict key."""
    parts = key.split(".")
    top = parts[0]
    if top == "embed" and parts[1] == "mlp":
        return [".".join(["embed", "embed", *parts[2:]])]
    if top == "pair_embed" and parts[1] == "mlp":
        return [".".join(["pair_embed", "embed", *parts[2:]])]
    if top in ("blocks", "cls_blocks"):
        head, rest = parts[:2], parts[2:]
        if rest[0] in BLOCK_RENAMES:
            return [".".join([*head, BLOCK_RENAMES[rest[0]]])]
        if rest[:2] == ["attn", "in_proj"]:
            return [
                ".".join([*head, "attn", "in_proj", rest[2]]),
                ".".join([*head, "attn", f"in_proj_{rest[2]}"]),
            ]
        return [key]
    if top == "head":
        # a plain Linear head is weaver's fc.0 (a Sequential of one Linear); an MLP head has the same indices
        return [".".join(["fc", *parts[1:]]) if len(parts) > 2 else f"fc.0.{parts[1]}"]
    return [key]  # embed.input_bn.*, cls_token, norm.*


def weaver_key_map(model: ParticleTransformer, keep_head: bool = True) -> dict[str, str]:
    """{weaver key: jettag key} for every tensor of `model`'s state dict (both attention namings)."""
    mapping = {}
    for key in model.state_dict():
        if key.startswith("head.") and not keep_head:
            continue
        for name in _weaver_names(key):
            mapping[name] = key
    return mapping


def weaver_num_classes(state: Mapping[str, torch.Tensor]) -> int | None:
    """Outputs of the last Linear of weaver's `fc` head, or None without a head."""
    heads = [k for k in state if k.startswith("fc.") and k.endswith(".weight")]
    if not heads:
        return None
    last = max(heads, key=lambda k: int(k.split(".")[1]))
    return state[last].shape[0]


def load_weaver_weights(
    model: ParticleTransformer,
    source: str | Path | Mapping[str, torch.Tensor],
    strict: bool = True,
    keep_head: bool | str = True,
) -> list[str]:
    """Load a weaver-core ParticleTransformer state dict (a path or a mapping) into `model`.

    `keep_head=False` leaves the model's classifier head as it is (the file's `fc.*` is skipped);
    `keep_head="auto"` keeps the file's head when its output size fits the model and otherwise
    logs that it is replaced by the model's own (freshly initialised) head. With `strict`, every
    tensor of the file must map onto the model and every tensor of the model must be in the file;
    otherwise a `ConfigError` names the file and the first key that does not fit. Returns the
    jettag keys that were not loaded (always empty with `strict`).
    """
    state, name = read_weaver_state_dict(source)
    file_classes = weaver_num_classes(state)
    model_classes = model.num_classes
    if keep_head == "auto":
        keep_head = file_classes == model_classes
        if not keep_head:
            log.info(
                "%s: the file's head has %s outputs and the model %d classes: the head is replaced by a new one",
                name,
                file_classes,
                model_classes,
            )
    elif keep_head and file_classes is not None and file_classes != model_classes:
        raise ConfigError(
            f"{name} classifies {file_classes} classes but the model {model_classes}; "
            "load it with keep_head=False (or 'auto') to replace the head."
        )

    mapping = weaver_key_map(model, keep_head=bool(keep_head))
    target = model.state_dict()
    converted: dict[str, torch.Tensor] = {}
    for key, tensor in state.items():
        if key in IGNORED_KEYS or (not keep_head and key.startswith("fc.")):
            continue
        jettag_key = mapping.get(key)
        if jettag_key is None:
            if strict:
                raise ConfigError(
                    f"{name} does not fit this ParticleTransformer: its tensor '{key}' has no counterpart "
                    "(a different weaver configuration or model?)."
                )
            continue
        expected = target[jettag_key].shape
        if key.startswith("pair_embed.embed.") and tensor.dim() == 3 and tensor.shape[-1] == 1:
            tensor = tensor.squeeze(-1)  # 1x1 Conv1d -> Linear
        if tensor.shape != expected:
            raise ConfigError(
                f"{name} does not fit this ParticleTransformer: '{key}' has shape {tuple(tensor.shape)} where the "
                f"model needs {tuple(expected)} (check input_dim, widths and num_heads)."
            )
        converted[jettag_key] = tensor
    missing = [k for k in target if k not in converted and (keep_head or not k.startswith("head."))]
    if strict:
        for key in missing:
            if not key.endswith(OPTIONAL_SUFFIX):
                weaver_key = _weaver_names(key)[0]
                raise ConfigError(
                    f"{name} does not fit this ParticleTransformer: it lacks '{weaver_key}' "
                    "(a different weaver configuration or model?)."
                )
    model.load_state_dict(converted, strict=False)
    return [k for k in missing if not k.endswith(OPTIONAL_SUFFIX)]


def attach_weights(model: nn.Module, weights: str | Path) -> nn.Module:
    """`model.weights=...` of a run config: load the file into a ParticleTransformer, fitting the head."""
    if not isinstance(model, ParticleTransformer):
        raise ConfigError(
            f"model.weights is only supported for the ParticleTransformer, not {type(model).__name__}; "
            "set model.weights=null."
        )
    load_weaver_weights(model, weights, keep_head="auto")
    log.info("loaded weaver-core ParT weights from %s", weights)
    return model
