"""Shared test helpers: random weights with a layout's pattern, and error measures."""
from __future__ import annotations

import torch

import sparsekern as sk
from sparsekern.formats import layouts

#: Relative-error bounds per compute dtype (DESIGN.md, "Tests").
TOL = {torch.float64: 1e-12, torch.float32: 1e-5, torch.float16: 1e-2, torch.bfloat16: 1e-2}


def rel_err(out: torch.Tensor, ref: torch.Tensor) -> float:
    """||out - ref|| / ||ref|| in float64 (0 when both are empty or zero)."""
    out, ref = out.double(), ref.double()
    num = (out - ref).norm().item()
    den = ref.norm().item()
    return num / den if den > 0 else num


def random_pattern_weight(M: int, K: int, layout: str, density: float = 0.3,
                          blocksize=(4, 4), dtype=torch.float32, generator=None) -> torch.Tensor:
    """A fresh random [M, K] weight whose zeros form ``layout``'s pattern at ~``density``.

    Any registered layout (an unknown one raises ValueError naming ``layout``): 2:4, bsr and
    csc draw a random pattern; another layout magnitude-prunes the random W to its pattern.
    """
    lay = layouts.get(layout)
    W = torch.randn(M, K, generator=generator, dtype=torch.float64)
    if layout == "2:4":
        Kp = -(-K // 4) * 4
        scores = torch.rand(M, Kp // 4, 4, generator=generator, dtype=torch.float64)
        keep = torch.zeros_like(scores, dtype=torch.bool)
        keep.scatter_(2, scores.argsort(-1)[..., :2], True)
        if density < 0.5:  # also drop some of the kept pairs
            keep &= torch.rand(keep.shape, generator=generator, dtype=torch.float64) < 2 * density
        mask = keep.reshape(M, Kp)[:, :K]
    elif layout == "bsr":
        bm, bk = blocksize
        Mb, Kb = -(-M // bm), -(-K // bk)
        blocks = torch.rand(Mb, Kb, generator=generator, dtype=torch.float64) < density
        mask = blocks.repeat_interleave(bm, 0).repeat_interleave(bk, 1)[:M, :K]
    elif layout == "csc":
        mask = torch.rand(M, K, generator=generator, dtype=torch.float64) < density
    else:
        sparsity = 0.0 if lay.fixed_density is not None else 1.0 - density
        return lay.magnitude_prune(W, sparsity, blocksize if lay.blocked else None).to(dtype)
    return (W * mask).to(dtype)


def dense_ref(W: torch.Tensor, B: torch.Tensor, bias=None) -> torch.Tensor:
    """float64 dense W @ B (+ bias)."""
    out = W.double() @ B.double()
    if bias is not None:
        out += bias.double().unsqueeze(1)
    return out


def cpu_isas():
    """Every CPU kernel path this machine can run (SPARSEKERN_CPU_ISA values), lowest first;
    ["native"] without compiled kernels (the tests that take it skip)."""
    try:
        have = torch.ops.sparsekern._cpu_isa()
    except (AttributeError, RuntimeError):
        return ["native"]
    order = ["portable", "avx2", "avx512"]
    return order[:order.index(have) + 1] if have in order else ["portable"]
