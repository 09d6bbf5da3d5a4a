"""Randomness keyed by what it is for, not by where it is computed.

An evaluation may run on one worker or be split into shards (units of samples) run by many, in
batches of any size; its numbers must not change (DESIGN §5). So every random number that concerns
one sample is a fixed function of (evaluation seed, radius, stream, GLOBAL sample index, ...):

- `mix_seed` folds integers into a 63-bit generator seed (splitmix64 on Python ints): a random
  start is drawn from a CPU generator seeded with mix_seed(seed, ε index, stream, sample index);
- `keyed_signs` is a counter-based hash evaluated elementwise in torch (murmur3's 32-bit
  finalizer on int64 tensors, every product kept below 2⁶³), for the per-sample draws inside an
  attack's iterations (Square's signs): no generator state, any subset of samples, any device.
"""

from __future__ import annotations

import torch
from torch import Tensor

MASK32 = 0xFFFFFFFF
MASK64 = 0xFFFFFFFFFFFFFFFF


def _splitmix64(z: int) -> int:
    z = (z + 0x9E3779B97F4A7C15) & MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK64
    return z ^ (z >> 31)


def mix_seed(*fields: int) -> int:
    """A generator seed in [0, 2⁶³) that is a fixed, well-mixed function of the integers (any sign or size)."""
    h = 0
    for value in fields:
        h = _splitmix64(h ^ (int(value) & MASK64))
    return h >> 1


def _mul32(h: Tensor, constant: int) -> Tensor:
    """(h · constant) mod 2³² for h in [0, 2³²) as int64, in 16-bit halves: no product reaches 2⁶³."""
    low, high = h & 0xFFFF, h >> 16
    return ((low * constant) + (((high * constant) & 0xFFFF) << 16)) & MASK32


def _fmix32(h: Tensor) -> Tensor:
    """murmur3's 32-bit finalizer (a bijection of [0, 2³²) with full avalanche), on int64 tensors."""
    h = h ^ (h >> 16)
    h = _mul32(h, 0x85EBCA6B)
    h = h ^ (h >> 13)
    h = _mul32(h, 0xC2B2AE35)
    return h ^ (h >> 16)


def keyed_bits(seed: int, keys: Tensor, counter: int, count: int, first: int = 0) -> Tensor:
    """N×count uniform 32-bit words (int64 in [0, 2³²)), word [b, j] a function of (seed, keys[b],
    counter, first + j) only: the same for a sample whatever else is drawn beside it."""
    stream = mix_seed(seed, counter)
    keys = keys.long()
    h = _fmix32((keys & MASK32) ^ (stream & MASK32))
    h = _fmix32(h ^ ((keys >> 32) & MASK32))
    h = _fmix32(h ^ ((stream >> 32) & MASK32))
    elements = torch.arange(first, first + count, device=keys.device, dtype=torch.long) & MASK32
    return _fmix32(_fmix32(h.unsqueeze(1) ^ elements.unsqueeze(0)) ^ 0x5BD1E995)


def keyed_signs(seed: int, keys: Tensor, counter: int, count: int, first: int = 0) -> Tensor:
    """N×count fp32 signs ±1, each a function of (seed, key, counter, element) only (`keyed_bits`)."""
    bits = (keyed_bits(seed, keys, counter, count, first) >> 31) & 1
    return (2 * bits - 1).to(torch.float32)
