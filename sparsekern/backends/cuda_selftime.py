"""Self-timing of the CUDA kernels against cuBLAS and torch's semi-structured 2:4 (GPU only).

    from sparsekern.backends.cuda_selftime import time_cuda_kernels
    rows = time_cuda_kernels()          # list of dicts, one per case (see _CASES)

Imports without a GPU; calling it needs CUDA and the extension built with the CUDA kernels.
Every case first checks the result against a float32 dense product (a timing of a wrong
answer is worthless), then takes median times with CUDA events (triton.testing.do_bench) while
rotating through several input sets (so L2 holds no previous call's operands). Times, ms:
  kernel_ms        torch.ops.sparsekern._spmm_cuda on the prebuilt repacked weight
  kernel_graph_ms  the same replayed from a CUDA graph (N <= 16: launch gaps removed)
  op_ms            the public path, sk.linear(x, A) with use_backend("cuda")
  dense_ms         cuBLAS through torch.nn.functional.linear on the dense weight
  torch24_ms       torch.sparse.to_sparse_semi_structured weight (2:4 cases; None + a note
                   in `notes` when torch cannot serve the shape)
Shapes are weights [M, K] times activations x [N, K] (B = x.T, the layout sk.linear passes).
"""
from __future__ import annotations

import math
from typing import Callable, Dict, List, Optional

import torch

#: (layout, M, K, N, fraction of zero activations)
_CASES = (
    [("2:4", 8192, 8192, 8192, 0.0)] +
    [("2:4", M, K, N, 0.0) for (M, K) in ((11008, 4096), (4096, 11008))
     for N in (2048, 8192, 1, 8, 16)] +
    [("csc", M, K, 1, z) for (M, K) in ((4096, 4096), (11008, 4096)) for z in (0.0, 0.5)]
)
#: Density of the CSC weights (90% sparse).
CSC_DENSITY = 0.1


def _median_ms(fn: Callable[[], object], warmup_ms: int = 25, rep_ms: int = 100) -> float:
    from triton.testing import do_bench
    return float(do_bench(fn, warmup=warmup_ms, rep=rep_ms, return_mode="median"))


def _graph_median_ms(fn: Callable[[], object], rep_ms: int = 100) -> float:
    from triton.testing import do_bench_cudagraph
    return float(do_bench_cudagraph(fn, rep=rep_ms, return_mode="median"))


def _rotation(count: int, make: Callable[[], object]) -> Callable[[], object]:
    """A function returning the next of ``count`` input sets, round robin."""
    items = [make() for _ in range(count)]
    state = {"i": 0}

    def nxt():
        state["i"] = (state["i"] + 1) % len(items)
        return items[state["i"]]
    return nxt


def _sets_for(bytes_per_set: int) -> int:
    """Input sets so that a round covers at least twice the L2 (min 2, max 16)."""
    props = torch.cuda.get_device_properties(torch.cuda.current_device())
    l2 = getattr(props, "L2_cache_size", 50 * 2**20) or 50 * 2**20
    return int(min(16, max(2, math.ceil(2 * l2 / max(1, bytes_per_set)))))


def _weight(layout: str, M: int, K: int, dtype, device) -> torch.Tensor:
    W = torch.randn(M, K, device=device, dtype=torch.float32)
    if layout == "2:4":
        # Keep the two largest of every 4 (magnitude pruning to 2:4).
        g = W.view(M, K // 4, 4)
        keep = torch.zeros_like(g, dtype=torch.bool)
        keep.scatter_(2, g.abs().topk(2, dim=-1).indices, True)
        W = (g * keep).view(M, K)
    else:
        W = W * (torch.rand(M, K, device=device) < CSC_DENSITY)
    return W.to(dtype)


def _rel_err(out: torch.Tensor, ref: torch.Tensor) -> float:
    out, ref = out.float(), ref.float()
    return float((out - ref).norm() / ref.norm().clamp_min(1e-30))


def _time_case(layout: str, M: int, K: int, N: int, zero_frac: float,
               dtype=torch.float16) -> Dict[str, object]:
    import sparsekern as sk
    from sparsekern.backends import cuda as cuda_backend
    from sparsekern.backends import use_backend
    from sparsekern.formats.base import cached_repack

    dev = torch.device("cuda")
    row: Dict[str, object] = {"layout": layout, "M": M, "K": K, "N": N,
                              "zero_activations": zero_frac, "dtype": str(dtype).split(".")[-1],
                              "device": torch.cuda.get_device_name(dev), "notes": []}
    W = _weight(layout, M, K, dtype, dev)
    A = sk.to_sparse(W, layout=layout)

    def make_x():
        x = torch.randn(N, K, device=dev, dtype=dtype)
        if zero_frac > 0:  # whole activation columns zero (ReLU-like), EIE skips them
            x[:, torch.rand(K, device=dev) < zero_frac] = 0
        return x
    bytes_per_set = N * K * 2 + M * N * 2
    next_x = _rotation(_sets_for(bytes_per_set), make_x)

    # Correctness first, through the public path on the cuda backend.
    x = next_x()
    with use_backend("cuda"):
        y = sk.linear(x, A)
    ref = torch.nn.functional.linear(x.float(), W.float())
    row["rel_err"] = _rel_err(y, ref)

    # Prebuilt repacked weight for the raw kernel (what the backend caches on the weight).
    values, indices, offsets = A.values, A.indices, A.offsets
    if layout == "2:4":
        from sparsekern.backends.cuda_repack import repack_semi24
        p = cached_repack(values, f"cuda:2:4:mma.sp:{M}x{K}", (indices,),
                          lambda: repack_semi24(values, indices, M, K))
        fmt = (p.a_frag, p.meta, offsets)
    else:
        from sparsekern.backends.cuda_repack import repack_csc_slabs
        p = cached_repack(values, f"cuda:csc:slabs:{M}x{K}", (indices, offsets),
                          lambda: repack_csc_slabs(values, indices, offsets, M, K))
        fmt = (p.values, p.rows, p.ptr)
    outs = [torch.empty(N, M, device=dev, dtype=dtype).t() for _ in range(2)]
    flip = {"i": 0}

    def kernel():
        flip["i"] ^= 1
        torch.ops.sparsekern._spmm_cuda(*fmt, M, K, layout, next_x().t(), None, outs[flip["i"]])

    row["kernel_ms"] = _median_ms(kernel)
    row["kernel_graph_ms"] = None
    if N <= 16:
        try:
            row["kernel_graph_ms"] = _graph_median_ms(kernel)
        except Exception as e:  # noqa: BLE001 (report, keep timing the rest)
            row["notes"].append(f"graph timing failed: {type(e).__name__}: {e}")

    def op():
        with use_backend("cuda"):
            sk.linear(next_x(), A)
    row["op_ms"] = _median_ms(op)

    def dense():
        torch.nn.functional.linear(next_x(), W)
    row["dense_ms"] = _median_ms(dense)

    row["torch24_ms"] = None
    if layout == "2:4":
        try:
            from torch.sparse import to_sparse_semi_structured
            Ws = to_sparse_semi_structured(W)
            err = _rel_err(torch.nn.functional.linear(x, Ws), ref)
            if err > 1e-2:
                row["notes"].append(f"torch semi-structured rel_err {err:.2e}")

            def torch24():
                torch.nn.functional.linear(next_x(), Ws)
            row["torch24_ms"] = _median_ms(torch24)
        except Exception as e:  # noqa: BLE001
            row["notes"].append(f"torch semi-structured unavailable: {type(e).__name__}: {e}")
    best = row["kernel_graph_ms"] or row["kernel_ms"]
    row["speedup_vs_dense"] = row["dense_ms"] / best if best else None
    _ = cuda_backend  # imported so a build without the CUDA op fails here, early
    return row


def time_cuda_kernels(cases=None, dtype=torch.float16) -> List[Dict[str, object]]:
    """Time every case (default: _CASES); one dict per case (keys: see the module docstring).

    A case that raises is reported with an ``error`` entry instead of stopping the rest.
    """
    from sparsekern.backends import cuda as cuda_backend
    ok, why = cuda_backend.available()
    if not ok:
        raise RuntimeError(f"the cuda backend is not available: {why}")
    rows: List[Dict[str, object]] = []
    for (layout, M, K, N, zero_frac) in (cases or _CASES):
        try:
            rows.append(_time_case(layout, M, K, N, zero_frac, dtype))
        except Exception as e:  # noqa: BLE001
            rows.append({"layout": layout, "M": M, "K": K, "N": N,
                         "zero_activations": zero_frac, "error": f"{type(e).__name__}: {e}"})
        torch.cuda.empty_cache()
    return rows


def format_table(rows: List[Dict[str, object]]) -> str:
    """A short fixed-width table of the rows (for the end of a GPU check's output)."""
    def f(v: Optional[float]) -> str:
        return "-" if v is None else f"{v:.4f}"
    lines = [f"{'layout':5} {'M':>6} {'K':>6} {'N':>5} {'zero':>4} {'kernel':>8} {'graph':>8} "
             f"{'op':>8} {'dense':>8} {'torch24':>8} {'x dense':>7} {'relerr':>8}"]
    for r in rows:
        if "error" in r:
            lines.append(f"{r['layout']:5} {r['M']:>6} {r['K']:>6} {r['N']:>5} ERROR {r['error']}")
            continue
        sp = r.get("speedup_vs_dense")
        lines.append(
            f"{r['layout']:5} {r['M']:>6} {r['K']:>6} {r['N']:>5} {r['zero_activations']:>4} "
            f"{f(r['kernel_ms']):>8} {f(r['kernel_graph_ms']):>8} {f(r['op_ms']):>8} "
            f"{f(r['dense_ms']):>8} {f(r['torch24_ms']):>8} "
            f"{'-' if sp is None else f'{sp:.2f}':>7} {r['rel_err']:>8.1e}")
    return "\n".join(lines)


__all__ = ["time_cuda_kernels", "format_table", "main"]


def main() -> None:
    """``python -m sparsekern.backends.cuda_selftime [out.json]``: time, print the table, and
    write the rows as JSON to the given path (default: $OUT/cuda_selftime.json when $OUT is
    set)."""
    import json
    import os
    import sys

    rows = time_cuda_kernels()
    path = sys.argv[1] if len(sys.argv) > 1 else (
        os.path.join(os.environ["OUT"], "cuda_selftime.json") if os.environ.get("OUT") else None)
    if path:
        with open(path, "w") as f:
            json.dump(rows, f, indent=1)
    print(format_table(rows))


if __name__ == "__main__":
    main()
