"""Differential test at mid sizes: the compiled kernels' batched paths (panels, panel tails,
small-N chunks, threads splitting rows and panels) against the reference backend.

test_reliability_fuzz.py keeps M, K <= 12 and N <= 9, where most calls run a GEMV or small-N
kernel. Here M up to 257, K up to 388 and N up to 100 reach the panel kernels and their tails
(16q + 1..3 columns, 9-11 columns in chunks), with B in every memory layout a caller can pass
(contiguous, transposed, strided, expanded either way, flipped), Inf / NaN / 0 entries in B,
a bias or none, float32 / bfloat16 / float16, and 1-3 threads. Each run draws fresh cases;
a failure names its seed (SPARSEKERN_TEST_SEED=<seed> replays it). Every ISA the machine
has runs (SPARSEKERN_CPU_ISA, re-read in process).
"""
from __future__ import annotations

import os
import random

import pytest
import torch

import sparsekern as sk
from sparsekern.backends import get_backend, select, use_backend
from tests.helpers import cpu_isas as _isas  # ["native"]: the tests skip

LAYOUTS = ("2:4", "1:4", "bsr", "csc", "sell")
CASES = 200
BLOCKS = ((1, 1), (2, 2), (4, 4), (16, 16), (32, 32), (8, 4), (3, 5))


def _seed() -> int:
    env = os.environ.get("SPARSEKERN_TEST_SEED")
    return int(env) if env else random.SystemRandom().randrange(1 << 30)


def _weight(rng: random.Random, g: torch.Generator, layout: str, M: int, K: int):
    """(W [M, K] float32 with the layout's pattern, to_sparse keyword arguments)."""
    W = torch.randn(M, K, generator=g)
    sparsity = rng.choice([0.5, 0.7, 0.9, 0.97, 1.0])
    if layout in ("2:4", "1:4"):
        keep = 2 if layout == "2:4" else 1
        Kp = -(-K // 4) * 4
        Wp = torch.nn.functional.pad(W, (0, Kp - K)).reshape(M, Kp // 4, 4)
        Wp = Wp.scatter(-1, Wp.abs().argsort(-1)[..., :4 - keep], 0.0)
        return Wp.reshape(M, Kp)[:, :K].contiguous(), {}
    if layout == "bsr":
        bm, bk = rng.choice(BLOCKS)
        keep = (torch.rand(-(-M // bm), -(-K // bk), generator=g) >= sparsity).float()
        mask = keep.repeat_interleave(bm, 0).repeat_interleave(bk, 1)[:M, :K]
        return W * mask, {"blocksize": (bm, bk)}
    return W * (torch.rand(M, K, generator=g) >= sparsity), {}


def _dense_operand(rng: random.Random, g: torch.Generator, K: int, N: int) -> torch.Tensor:
    """B [K, N] float32 in one of the memory layouts a caller can pass."""
    kind = rng.choice(["contig", "transposed", "strided", "expand_n", "expand_k", "flipped"])
    if kind == "contig":
        B = torch.randn(K, N, generator=g)
    elif kind == "transposed":
        B = torch.randn(N, K, generator=g).t()
    elif kind == "strided":
        B = torch.randn(K, 2 * N + 3, generator=g)[:, 1:2 * N + 1:2]
    elif kind == "expand_n":
        B = torch.randn(K, 1, generator=g).expand(K, N)
    elif kind == "expand_k":
        B = torch.randn(1, N, generator=g).expand(K, N)
    else:
        B = torch.randn(K, N, generator=g).flip(0)
    if rng.random() < 0.15:  # one special entry (clone keeps the strides)
        B = B.clone()
        B[rng.randrange(K), rng.randrange(N)] = rng.choice([float("inf"), float("nan"), 0.0])
    return B


def _agree(out: torch.Tensor, ref: torch.Tensor, dtype: torch.dtype, what: str) -> None:
    assert out.shape == ref.shape and out.dtype == ref.dtype, what
    o, r = out.float(), ref.float()
    assert torch.equal(o.isnan(), r.isnan()), f"NaN positions differ: {what}"
    assert torch.equal(o.isinf(), r.isinf()) and torch.equal(o[o.isinf()], r[r.isinf()]), \
        f"Inf positions differ: {what}"
    fin = o.isfinite()
    if fin.any():
        tol = 1e-4 if dtype == torch.float32 else 2e-2
        scale = max(1.0, r[fin].abs().max().item())
        err = (o[fin] - r[fin]).abs().max().item()
        assert err <= tol * scale, f"max error {err:.3g} (scale {scale:.3g}): {what}"


@pytest.mark.parametrize("isa", _isas())
@pytest.mark.parametrize("layout", LAYOUTS)
def test_mid_sizes_agree_with_reference(layout, isa, cpu_isa_env, cpu_broadcast_env):
    ok, why = get_backend("cpu").available()
    if not ok:
        pytest.skip(f"the compiled CPU kernels are not loaded: {why}")
    cpu_isa_env(isa)
    assert torch.ops.sparsekern._cpu_isa() == isa
    seed = _seed()
    rng = random.Random(seed)
    threads = torch.get_num_threads()
    try:
        for case in range(CASES):
            M = rng.choice([1, 3, 15, 16, 17, 31, 33, 64, 100, 130, 257])
            K = rng.choice([4, 8, 16, 60, 64, 65, 128, 200, 256, 388])
            N = rng.choice([1, 2, 3, 5, 8, 9, 10, 11, 12, 13, 16, 17, 18, 19, 31, 32, 33, 47,
                            64, 65, 100])
            dtype = rng.choice([torch.float32, torch.float32, torch.bfloat16, torch.float16])
            torch.set_num_threads(rng.choice([1, 2, 3]))
            broadcast = rng.choice(["register", "load"])  # the AVX-512 panels' (isa.h)
            cpu_broadcast_env(broadcast)
            g = torch.Generator().manual_seed(rng.randrange(1 << 30))
            W, kw = _weight(rng, g, layout, M, K)
            A = sk.to_sparse(W.to(dtype), layout=layout, **kw)
            B = _dense_operand(rng, g, K, N).to(dtype)
            bias = torch.randn(M, generator=g).to(dtype) if rng.random() < 0.5 else None
            what = (f"seed {seed} case {case}: {isa} broadcast={broadcast} {layout} {kw} M={M} "
                    f"K={K} N={N} {dtype} "
                    f"B strides {tuple(B.stride())} bias {bias is not None} "
                    f"threads {torch.get_num_threads()}")
            # Otherwise the reference would be compared with itself.
            assert select(layout, dtype, dtype, B.device).__name__.endswith(".cpu"), what
            out = sk.spmm(A, B, bias)
            with use_backend("reference"):
                ref = sk.spmm(A, B, bias)
            _agree(out, ref, dtype, what)
    finally:
        torch.set_num_threads(threads)


@pytest.mark.parametrize("isa", _isas())
@pytest.mark.parametrize("layout", LAYOUTS)
def test_mid_sizes_backward_ops_agree_with_reference(layout, isa, cpu_isa_env):
    """spmm_transposed (A^T G) and spmm_sampled_dot ((G B^T) at the stored entries), the
    products of the backward pass, at the same sizes (N up to 513)."""
    ok, why = get_backend("cpu").available()
    if not ok:
        pytest.skip(f"the compiled CPU kernels are not loaded: {why}")
    cpu_isa_env(isa)
    seed = _seed()
    rng = random.Random(seed)
    threads = torch.get_num_threads()
    ops = torch.ops.sparsekern
    try:
        for case in range(CASES // 2):
            M = rng.choice([1, 3, 15, 16, 17, 31, 33, 64, 100, 130, 257])
            K = rng.choice([4, 8, 16, 60, 64, 65, 128, 200, 256, 388])
            N = rng.choice([1, 2, 3, 5, 8, 9, 16, 17, 31, 33, 64, 100, 513])
            dtype = rng.choice([torch.float32, torch.float32, torch.bfloat16, torch.float16])
            torch.set_num_threads(rng.choice([1, 2, 3]))
            g = torch.Generator().manual_seed(rng.randrange(1 << 30))
            W, kw = _weight(rng, g, layout, M, K)
            v, i, o = sk.to_sparse(W.to(dtype), layout=layout, **kw).op_args()[:3]
            G = _dense_operand(rng, g, M, N).to(dtype)
            B = _dense_operand(rng, g, K, N).to(dtype)
            transposed = rng.random() < 0.5
            what = (f"seed {seed} case {case}: {isa} {layout} {kw} M={M} K={K} N={N} {dtype} "
                    f"{'spmm_transposed' if transposed else 'spmm_sampled_dot'} G strides "
                    f"{tuple(G.stride())} B strides {tuple(B.stride())} "
                    f"threads {torch.get_num_threads()}")

            def call():
                if transposed:
                    return ops.spmm_transposed(v, i, o, M, K, layout, G)
                return ops.spmm_sampled_dot(v, i, o, M, K, layout, G, B)
            out = call()
            with use_backend("reference"):
                ref = call()
            _agree(out, ref, dtype, what)
    finally:
        torch.set_num_threads(threads)
