"""The weights and activations of a benchmark case, reproducible from the case.

``weight(case)`` is W [M, K] ~ N(0, 1/K), pruned by magnitude (sparsekern.bench.magnitude)
to the case's pattern in float32 on ``device``, then cast to ``dtype``; row-major.
``activations(case)`` is x [N, K], row-major: N(0, 1) (no zeros) or, for
activation="relu", relu(N(0, 1)) (about half zeros). Both are drawn on the CPU from a
generator seeded by the case, so every device sees the same numbers.
"""
from __future__ import annotations

import zlib
from typing import List

import torch

from .cases import Case
from .magnitude import prune


def weight_key(case: Case, seed: int = 0) -> str:
    """What the weight depends on (not N, not the activation): equal keys, equal W."""
    return f"{seed}:{case.layout}:{case.blocksize}:{case.sparsity}:{case.M}x{case.K}"


def _generator(case: Case, salt: str, seed: int) -> torch.Generator:
    key = f"{weight_key(case, seed)}:{salt}"
    return torch.Generator().manual_seed(zlib.crc32(key.encode()))


def weight(case: Case, dtype=torch.float32, device="cpu", seed: int = 0) -> torch.Tensor:
    """Pruned dense W [M, K] (the same for every N of a shape/layout/sparsity)."""
    g = _generator(case, "W", seed)
    W = (torch.randn(case.M, case.K, generator=g) / case.K ** 0.5).to(device)
    W = prune(W, case.layout, case.sparsity, case.blocksize)  # in float32, on the device
    return W.to(dtype=dtype).contiguous()


def activations(case: Case, dtype=torch.float32, device="cpu", seed: int = 0,
                index: int = 0) -> torch.Tensor:
    """x [N, K], row-major; ``index`` picks one of several independent sets (GPU rotation)."""
    g = _generator(case, f"x{case.N}:{case.activation}:{index}", seed)
    x = torch.randn(case.N, case.K, generator=g)
    if case.activation == "relu":
        x = torch.relu(x)
    return x.to(device=device, dtype=dtype).contiguous()


def activation_sets(case: Case, count: int, dtype=torch.float32, device="cpu",
                    seed: int = 0) -> List[torch.Tensor]:
    return [activations(case, dtype, device, seed, i) for i in range(count)]
