"""Particle Transformer (ParT): Qu, Li, Qian, "Particle Transformer for Jet Tagging", ICML 2022.

A jet is a set of particles. Each particle's features are embedded by an MLP; every pair of
particles gets four interaction features (ln kT, ln z, ln Delta, ln m^2, see
`jettag.features.pairwise`) embedded into one bias per attention head. Particle-attention blocks
add that bias to their attention logits (P-MHA); class-attention blocks then let a class token
attend to the particles, and a linear head classifies the token.

Inputs are channels-last: `x` (B, N, C) standardized particle features, `v` (B, N, 4) four-vectors
(px, py, pz, E), `mask` (B, N) True for real particles. Padding is excluded everywhere: from the
batch-norm statistics, from the pair features (only real pairs are computed) and, through one
additive -inf mask, from every attention. Scores therefore do not depend on how far a jet is padded.

The model is weaver-core's ParticleTransformer (the reference implementation) tensor for tensor:
`jettag.models.weaver.load_weaver_weights` loads its state dicts, and with the same weights the
logits agree to float32 rounding (and, in float64, train-mode gradients to 1e-10). Only the way
the work is done differs; the arithmetic of every layer is the same. One room per concern:

    model.py       ParticleTransformer (and the particle embedding `Embed`): what is computed
    blocks.py      Attention, Block, ClassBlock
    pair_embed.py  PairEmbed, the interaction bias, with its training autograd function
    packing.py     jets sorted by multiplicity, cut into buckets, real particles packed as tokens
    kernels.py     CPU kernels (fused linear, chunked attention, fast dropout, reused buffers)
    path.py        ExecutionPath: which way the work is done, `model.path` ("auto", "cpu_kernels",
                   "generic", "dense"); "dense" has static shapes, for export
"""

from jettag.models.part.blocks import Attention, Block, ClassBlock
from jettag.models.part.model import Embed, ParticleTransformer
from jettag.models.part.packing import Bucket, Layout, Packing, plan_buckets
from jettag.models.part.pair_embed import PairEmbed
from jettag.models.part.path import ExecutionPath

__all__ = [
    "Attention",
    "Block",
    "Bucket",
    "ClassBlock",
    "Embed",
    "ExecutionPath",
    "Layout",
    "Packing",
    "PairEmbed",
    "ParticleTransformer",
    "plan_buckets",
]
