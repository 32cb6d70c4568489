"""Standalone GPU timing of the Triton kernels against cuBLAS and torch's sparse kernels.

    from sparsekern.bench.triton_selftime import time_triton_kernels, format_table
    rows = time_triton_kernels()        # list of dicts, one per case (CUDA only)
    print(format_table(rows))

Imports without a GPU (torch only at import time); calling it needs CUDA. Cases: weights
[M, K] in {4096 x 4096, 11008 x 4096}, float16, times activations x [N, K] (B = x.T, what
``sparsekern.linear`` passes): BSR 64x64 at 90% block sparsity for N in {1, 8, 16, 4096};
2:4 and CSC at 90% for N in {1, 8, 16}. Every case first checks the kernel against the
dense product (a timing of a wrong answer is worthless), then takes median times
(``triton.testing.do_bench``; also from a CUDA graph, where Python launch overhead
vanishes) while rotating through enough weight/activation copies that L2 cannot hold them.
Row keys (times in ms):

    triton_ms, triton_graph_ms   the private op (sparsekern::_triton_*) on a prepared weight
    dense_ms, dense_graph_ms     cuBLAS: torch.nn.functional.linear on the dense weight
    peer, peer_ms                torch's own kernel for the layout where this torch has one
                                 (F.linear with a to_sparse_bsr weight; a
                                 to_sparse_semi_structured weight), else None and a note
    speedup                      dense_graph_ms / triton_graph_ms
    target                       the speedup the Triton issue asks for (H100), or None
    split_k, config              the split-K chosen and the autotuned configuration
    rel_err                      ||triton - dense|| / ||dense|| (float32 dense product)
"""
from __future__ import annotations

import math
from typing import Callable, Dict, List, Optional

import torch

#: (layout, M, K, N); 90% sparsity everywhere (BSR: of 64x64 blocks).
CASES = (
    [("bsr", M, K, N) for (M, K) in ((4096, 4096), (11008, 4096)) for N in (1, 8, 16, 4096)]
    + [(lay, M, K, N) for lay in ("2:4", "csc") for (M, K) in ((4096, 4096), (11008, 4096))
       for N in (1, 8, 16)]
)
DENSITY = 0.1
BLOCK = (64, 64)
#: Speedups over cuBLAS the issue targets on H100 (layout, N) -> x.
TARGETS = {("bsr", 4096): 5.0, **{("2:4", n): 1.5 for n in (1, 8, 16)},
           **{("csc", n): 3.0 for n in (1, 8, 16)}}


def _random_sparse_weight(layout: str, M: int, K: int, device, dtype, gen) -> torch.Tensor:
    """Dense [M, K] weight whose zeros form the layout's pattern at 90% sparsity."""
    W = torch.randn(M, K, device=device, generator=gen, dtype=torch.float32)
    if layout == "2:4":
        score = torch.rand(M, K // 4, 4, device=device, generator=gen)
        keep = torch.zeros_like(score, dtype=torch.bool).scatter_(2, score.argsort(-1)[..., :2],
                                                                  True)
        return (W * keep.reshape(M, K)).to(dtype)
    if layout == "bsr":
        bm, bk = BLOCK
        blocks = torch.rand(M // bm, K // bk, device=device, generator=gen) < DENSITY
        return (W * blocks.repeat_interleave(bm, 0).repeat_interleave(bk, 1)).to(dtype)
    return (W * (torch.rand(M, K, device=device, generator=gen) < DENSITY)).to(dtype)


def _copies(bytes_per_copy: int, device) -> int:
    """Copies so that one round through them covers twice the L2 (2..16)."""
    props = torch.cuda.get_device_properties(device)
    l2 = int(getattr(props, "L2_cache_size", 0) or 50 * 2**20)
    return max(2, min(16, math.ceil(2 * l2 / max(1, bytes_per_copy))))


class _Rotation:
    """Round robin over prepared argument sets (each call of ``next`` gives the next one)."""

    def __init__(self, items):
        self.items, self.i = items, 0

    def next(self):
        self.i = (self.i + 1) % len(self.items)
        return self.items[self.i]


def _median_ms(fn: Callable[[], object]) -> float:
    from triton.testing import do_bench
    return float(do_bench(fn, warmup=25, rep=100, return_mode="median"))


def _graph_median_ms(fn: Callable[[], object]) -> Optional[float]:
    from triton.testing import do_bench_cudagraph
    try:
        torch.cuda.synchronize()
        return float(do_bench_cudagraph(fn, rep=100, return_mode="median"))
    except Exception:  # capture can fail (e.g. a peer that synchronizes); report None
        return None


def _rel_err(out: torch.Tensor, ref: torch.Tensor) -> float:
    out, ref = out.float(), ref.float()
    return float((out - ref).norm() / ref.norm().clamp_min(1e-30))


def _prepared_call(layout: str, A, B: torch.Tensor, out: torch.Tensor):
    """A zero-argument call of the private op on a weight prepared like the backend does."""
    from sparsekern.triton import build_row_strips, triton_bsr, triton_csc, triton_semi24
    values, indices, offsets, M, K, _ = A.op_args()
    if layout == "bsr":
        return lambda: triton_bsr(values, indices, offsets, M, K, B, None, out)
    if layout == "2:4":
        return lambda: triton_semi24(values, indices, M, K, B, None, out)
    s = build_row_strips(values, indices, offsets, M, K)
    return lambda: triton_csc(s.values, s.cols, s.rows, s.ptr, M, K, B, None, out)


def _peer(layout: str, W: torch.Tensor):
    """(name, weight for F.linear) of torch's own kernel for the layout, or (name, None)."""
    if layout == "bsr":
        return "torch to_sparse_bsr", W.to_sparse_bsr(BLOCK)
    if layout == "2:4":
        from torch.sparse import to_sparse_semi_structured
        return "torch to_sparse_semi_structured", to_sparse_semi_structured(W)
    return "none (torch has no unstructured GPU kernel that beats dense)", None


def _time_case(layout: str, M: int, K: int, N: int, dtype, device) -> Dict[str, object]:
    import torch.nn.functional as F

    from sparsekern.formats import to_sparse
    from sparsekern.triton.bsr import bsr_split_k
    from sparsekern.triton.configs import regime, tuned_config
    from sparsekern.triton.csc import csc_split_k
    from sparsekern.triton.semi24 import semi24_split_k

    gen = torch.Generator(device=device).manual_seed(M * 31 + K * 7 + N)
    W = _random_sparse_weight(layout, M, K, device, dtype, gen)
    A = to_sparse(W, layout, blocksize=BLOCK) if layout == "bsr" else to_sparse(W, layout)
    row: Dict[str, object] = {"layout": layout, "M": M, "K": K, "N": N, "dtype": str(dtype),
                              "density": DENSITY, "device": torch.cuda.get_device_name(device),
                              "target": TARGETS.get((layout, N)), "notes": []}

    # Correctness first, on one set.
    x = torch.randn(N, K, device=device, dtype=dtype, generator=gen)
    out = torch.empty(N, M, device=device, dtype=dtype).t()
    call = _prepared_call(layout, A, x.t(), out)
    call()
    row["rel_err"] = _rel_err(out, W.float() @ x.float().t())
    if row["rel_err"] > 1e-2:
        raise RuntimeError(f"wrong result: relative error {row['rel_err']:.2e}")

    # Rotated sets: sparse weight + activations for the kernel, dense weight + activations.
    sparse_bytes = A.nbytes + x.numel() * x.element_size()
    kernel_sets = _Rotation([
        _prepared_call(layout, A if i == 0 else A.to(device, copy=True),
                       torch.randn(N, K, device=device, dtype=dtype, generator=gen).t(),
                       torch.empty(N, M, device=device, dtype=dtype).t())
        for i in range(_copies(sparse_bytes, device))])
    dense_sets = _Rotation([
        (W if i == 0 else W.clone(), torch.randn(N, K, device=device, dtype=dtype, generator=gen))
        for i in range(_copies(W.numel() * W.element_size(), device))])

    row["triton_ms"] = _median_ms(lambda: kernel_sets.next()())
    row["triton_graph_ms"] = _graph_median_ms(lambda: kernel_sets.next()())

    def dense():
        w, xx = dense_sets.next()
        return F.linear(xx, w)
    row["dense_ms"] = _median_ms(dense)
    row["dense_graph_ms"] = _graph_median_ms(dense)

    row["peer"], row["peer_ms"] = None, None
    try:
        name, Wp = _peer(layout, W)
        row["peer"] = name
        if Wp is not None:
            F.linear(x, Wp)  # may raise: shape/dtype limits of torch's kernels
            row["peer_ms"] = _median_ms(lambda: F.linear(dense_sets.next()[1], Wp))
    except Exception as exc:  # reported, not fatal
        row["notes"].append(f"peer unavailable: {type(exc).__name__}: {str(exc)[:200]}")

    reg = regime(N)
    if layout == "bsr":
        row["split_k"] = bsr_split_k(M, N, A.values.shape[0], *BLOCK, device)
        row["config"] = tuned_config("bsr", reg, *BLOCK)
    elif layout == "2:4":
        row["split_k"] = semi24_split_k(M, N, K, device)
        row["config"] = tuned_config("semi24", reg)
    else:
        row["split_k"] = csc_split_k(M, N, A.values.numel(), device)
        row["config"] = tuned_config("csc", reg)
    best = row["triton_graph_ms"] or row["triton_ms"]
    base = row["dense_graph_ms"] or row["dense_ms"]
    row["speedup"] = base / best if best else None
    return row


def time_triton_kernels(device: str = "cuda", cases=None,
                        dtype: torch.dtype = torch.float16) -> List[Dict[str, object]]:
    """Time every case (default :data:`CASES`); one dict per case (see module docstring).

    A case that raises is reported with an ``error`` entry instead of stopping the rest.
    """
    dev = torch.device(device)
    if dev.type != "cuda" or not torch.cuda.is_available():
        raise RuntimeError(f"time_triton_kernels needs a CUDA device; got device={device!r} "
                           f"(CUDA available: {torch.cuda.is_available()})")
    if dev.index is None:
        dev = torch.device("cuda", torch.cuda.current_device())
    rows: List[Dict[str, object]] = []
    for layout, M, K, N in (cases or CASES):
        try:
            rows.append(_time_case(layout, M, K, N, dtype, dev))
        except Exception as exc:  # noqa: BLE001 - report and go on
            rows.append({"layout": layout, "M": M, "K": K, "N": N,
                         "error": f"{type(exc).__name__}: {str(exc)[:500]}"})
        torch.cuda.empty_cache()
    return rows


def format_table(rows: List[Dict[str, object]]) -> str:
    """A fixed-width table of the rows (for a GPU check's log)."""
    def f(v) -> str:
        return "-" if v is None else f"{v:.4f}"
    head = (f"{'layout':6} {'M':>6} {'K':>5} {'N':>5} {'triton':>8} {'graph':>8} {'dense':>8} "
            f"{'dgraph':>8} {'peer':>8} {'x dense':>7} {'target':>6} {'split':>5} {'relerr':>8}")
    lines = [head]
    for r in rows:
        if "error" in r:
            lines.append(f"{r['layout']:6} {r['M']:>6} {r['K']:>5} {r['N']:>5} ERROR {r['error']}")
            continue
        sp, tg = r.get("speedup"), r.get("target")
        lines.append(
            f"{r['layout']:6} {r['M']:>6} {r['K']:>5} {r['N']:>5} {f(r['triton_ms']):>8} "
            f"{f(r['triton_graph_ms']):>8} {f(r['dense_ms']):>8} {f(r['dense_graph_ms']):>8} "
            f"{f(r['peer_ms']):>8} {'-' if sp is None else f'{sp:.2f}':>7} "
            f"{'-' if tg is None else f'{tg:.1f}':>6} {r['split_k']:>5} {r['rel_err']:>8.1e}")
    return "\n".join(lines)


def main(argv=None) -> int:
    """``python -m sparsekern.bench.triton_selftime [out.json]``: print the table, save the rows."""
    import json
    import sys
    args = sys.argv[1:] if argv is None else argv
    rows = time_triton_kernels()
    print(format_table(rows))
    if args:
        with open(args[0], "w") as fh:
            json.dump(rows, fh, indent=1)
    return 0 if all("error" not in r for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())


__all__ = ["time_triton_kernels", "format_table", "CASES", "TARGETS"]
