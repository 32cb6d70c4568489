"""Self-timing of the CUDA kernels against cuBLAS and torch's semi-structured 2:4 (GPU only).

    from sparsekern.bench.cuda_selftime import time_cuda_kernels
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

#: (layout, M, K, N, fraction of zero activations), the issue's key figures first (8192^3 and
#: decode against cuBLAS), then the mid-N tiles, the large-N shapes and the CSC GEMVs.
_CASES = (
    [("2:4", 8192, 8192, 8192, 0.0)] +
    [("2:4", 11008, 4096, N, 0.0) for N in (1, 8, 16)] +
    [("2:4", 4096, 4096, N, 0.0) for N in (32, 64, 128, 256)] +
    [("2:4", 4096, 11008, N, 0.0) for N in (1, 16)] +
    [("2:4", M, K, N, 0.0) for (M, K) in ((11008, 4096), (4096, 11008)) for N in (2048, 8192)] +
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


def _raw_kernel_format(A, layout: str, M: int, K: int):
    """The repacked format tensors the raw CUDA kernel takes (what the backend caches on the
    weight): (a_frag, meta, offsets) for 2:4, (values, rows, ptr) slabs for CSC."""
    from sparsekern.formats.base import cached_repack
    values, indices, offsets = A.values, A.indices, A.offsets
    if layout == "2:4":
        from sparsekern.backends.cuda_repack import repack_semi24
        p = cached_repack(values, f"cuda:2:4:mma.sp:{M}x{K}", (indices,),
                          lambda: repack_semi24(values, indices, M, K))
        return (p.a_frag, p.meta, offsets)
    from sparsekern.backends.cuda_repack import repack_csc_slabs
    p = cached_repack(values, f"cuda:csc:slabs:{M}x{K}", (indices, offsets),
                      lambda: repack_csc_slabs(values, indices, offsets, M, K))
    return (p.values, p.rows, p.ptr)


def _torch24_ms(W, x, ref, next_x, notes: list):
    """torch's own 2:4 (to_sparse_semi_structured) median ms, or None with a note."""
    try:
        from torch.sparse import to_sparse_semi_structured
        Ws = to_sparse_semi_structured(W)
        err = _rel_err(torch.nn.functional.linear(x, Ws), ref)
        if err > 1e-2:
            notes.append(f"torch semi-structured rel_err {err:.2e}")

        def torch24():
            torch.nn.functional.linear(next_x(), Ws)
        return _median_ms(torch24)
    except Exception as e:  # noqa: BLE001
        notes.append(f"torch semi-structured unavailable: {type(e).__name__}: {e}")
        return None


def _time_case(layout: str, M: int, K: int, N: int, zero_frac: float,
               dtype=torch.float16) -> Dict[str, object]:
    from sparsekern.formats import to_sparse
    from sparsekern.functional import linear
    from sparsekern.backends import cuda as cuda_backend
    from sparsekern.backends import use_backend

    dev = torch.device("cuda")
    row: Dict[str, object] = {"layout": layout, "M": M, "K": K, "N": N,
                              "zero_activations": zero_frac, "dtype": str(dtype).split(".")[-1],
                              "device": torch.cuda.get_device_name(dev), "notes": []}
    W = _weight(layout, M, K, dtype, dev)
    A = to_sparse(W, layout=layout)

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
        y = linear(x, A)
    ref = torch.nn.functional.linear(x.float(), W.float())
    row["rel_err"] = _rel_err(y, ref)

    fmt = _raw_kernel_format(A, layout, M, K)
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
            linear(next_x(), A)
    row["op_ms"] = _median_ms(op)

    def dense():
        torch.nn.functional.linear(next_x(), W)
    row["dense_ms"] = _median_ms(dense)

    row["torch24_ms"] = _torch24_ms(W, x, ref, next_x, row["notes"]) if layout == "2:4" else None
    best = row["kernel_graph_ms"] or row["kernel_ms"]
    row["speedup_vs_dense"] = row["dense_ms"] / best if best else None
    _ = cuda_backend  # imported so a build without the CUDA op fails here, early
    return row


def time_cuda_kernels(cases=None, dtype=torch.float16,
                      on_row: Optional[Callable[[Dict[str, object]], None]] = None
                      ) -> List[Dict[str, object]]:
    """Time every case (default: _CASES); one dict per case (keys: see the module docstring).

    A case that raises is reported with an ``error`` entry instead of stopping the rest;
    ``on_row`` is called with each row as soon as it is measured.
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
        if on_row is not None:
            on_row(rows[-1])
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


# ---------------------------------------------------------------------------------------------
# Single-nonzero probe of the 2:4 mma.sp layout.
#
# A has one stored 1.0 at (m, k); B[k', n] encodes k' + 1 (row code) or n + 1 (column code),
# integers that float16 and bfloat16 hold exactly. A right kernel writes out[m, :] = B[k, :]
# and nothing else; a wrong operand or metadata layout moves the value to another output row,
# or picks another B row, and the offsets (out row - m, B row - k) name the half or group
# that is swapped. ``run`` is the kernel under test; on the CPU the tests pass an emulator of
# mma.sp's operand semantics.

#: Probed positions: every row and the first k-step of one 16 x 32 tile, plus stragglers.
PROBE_ROWS = tuple(range(16)) + (17, 127)
PROBE_COLS = tuple(range(32)) + (32, 63, 64, 255)
#: Tile configurations of semi24_mma.cu the GPU probe forces in turn (SPARSEKERN_SEMI24_TILE).
PROBE_TILES = ("small", "mid32", "mid64", "large")


def _probe_b(code: str, K: int, N: int, kind: str, dtype, device) -> torch.Tensor:
    k = torch.arange(K, device=device, dtype=torch.float32)[:, None].expand(K, N)
    n = torch.arange(N, device=device, dtype=torch.float32)[None, :].expand(K, N)
    B = (k + 1 if code == "row" else n + 1).to(dtype)
    return B.t().contiguous().t() if kind == "xT" else B.contiguous()


def _single_nonzero(m: int, k: int, M: int, K: int, dtype, device):
    from sparsekern.formats import to_sparse
    W = torch.zeros(M, K, dtype=dtype, device=device)
    W[m, k] = 1
    return to_sparse(W, layout="2:4")


def _probe_one(run, A, m: int, k: int, Bs) -> List[str]:
    """Mismatch descriptions for the weight A with a single 1.0 at (m, k) ([] when right)."""
    problems = []
    for code, B in Bs:
        out = run(A, B).float().cpu()
        rows = sorted(set(out.nonzero()[:, 0].tolist()))
        expect = B[k].float().cpu()
        if rows != [m] or not torch.equal(out[m], expect):
            got = ", ".join(f"row {r}: {sorted(set(out[r].tolist()))[:4]}" for r in rows[:4])
            problems.append(f"A({m},{k}) {code} code: expected out row {m} = B row {k} "
                            f"(values {sorted(set(expect.tolist()))[:4]}); got "
                            f"{got or 'all zeros'}")
            if code.startswith("row/") and len(rows) == 1 and len(set(out[rows[0]].tolist())) == 1:
                kk = int(out[rows[0], 0].item()) - 1
                problems[-1] += f" [out row offset {rows[0] - m:+d}, B row offset {kk - k:+d}]"
    return problems


def _probe_bs(K: int, N: int, kinds, dtype, device):
    return [(f"{code}/{kind}", _probe_b(code, K, N, kind, dtype, device))
            for code in ("row", "col") for kind in kinds]


def probe_semi24_layout(run: Callable, M: int = 128, K: int = 256, N: int = 8,
                        kinds=("row", "xT"), dtype=torch.float16, device="cuda",
                        rows=PROBE_ROWS, cols=PROBE_COLS) -> Dict[str, object]:
    """Which output row picks up which B row, for single-nonzero 2:4 weights [M, K].

    Args:
        run: ``run(A, B) -> out [M, N]`` for a SparseTensor A [M, K] and B [K, N].
        kinds: B layouts: ``"row"`` (row-major [K, N]) and/or ``"xT"`` (x [N, K] transposed).
    Returns ``{"checked": positions x codes x kinds, "mismatches": [str, ...]}``.
    """
    Bs = _probe_bs(K, N, kinds, dtype, device)
    mismatches: List[str] = []
    for m in rows:
        for k in cols:
            A = _single_nonzero(m, k, M, K, dtype, device)
            mismatches += _probe_one(run, A, m, k, Bs)
    return {"checked": len(rows) * len(cols) * len(Bs), "mismatches": mismatches}


def probe_report(path: str, Ns=(8, 40, 200), tiles=("auto",) + PROBE_TILES,
                 M: int = 128, K: int = 256) -> int:
    """Run the probe on the cuda backend for every tile configuration and N; write ``path``.

    Each single-nonzero weight is built once and run through every configuration.
    Returns the number of mismatches (0: the layout is right everywhere probed).
    """
    import os

    from sparsekern.backends import use_backend

    def run(A, B):
        with use_backend("cuda"):
            return torch.ops.sparsekern.spmm(*A.op_args(), B, None)

    configs = [(tile, N) for tile in tiles for N in Ns]
    Bs = {N: _probe_bs(K, N, ("row", "xT"), torch.float16, "cuda") for N in Ns}
    bad: Dict[tuple, List[str]] = {c: [] for c in configs}
    try:
        for m in PROBE_ROWS:
            for k in PROBE_COLS:
                A = _single_nonzero(m, k, M, K, torch.float16, "cuda")
                for tile, N in configs:
                    os.environ["SPARSEKERN_SEMI24_TILE"] = "" if tile == "auto" else tile
                    bad[(tile, N)] += _probe_one(run, A, m, k, Bs[N])
    finally:
        os.environ.pop("SPARSEKERN_SEMI24_TILE", None)
        per = len(PROBE_ROWS) * len(PROBE_COLS) * 4
        lines = []
        for (tile, N), found in bad.items():
            lines.append(f"tile={tile} N={N}: {per} probes, {len(found)} mismatches")
            lines += [f"  {x}" for x in found[:64]]
        with open(path, "w") as f:  # also when interrupted: what was probed so far
            f.write("\n".join(lines) + "\n")
    return sum(len(v) for v in bad.values())


# ---------------------------------------------------------------------------------------------
# Small runs for compute-sanitizer (memcheck/racecheck): every tile configuration of the 2:4
# kernel (N = 1, 16, 40, 64 and 200 over M that select each), both B layouts, fp16 and bf16,
# bias or not, row- and column-major outputs, K and M off the padding; and the CSC kernel.
SANITIZE_2_4 = [(M, 300, N) for (M, N) in ((200, 1), (200, 16), (4100, 40), (8448, 64),
                                           (16900, 40), (333, 200))]
SANITIZE_CSC = [(300, 260, 1), (1000, 513, 8)]


def _sanitize_case(layout: str, M: int, K: int, N: int, dtype, kind: str, bias: bool) -> float:
    from sparsekern.formats import to_sparse
    from sparsekern.functional import linear
    from sparsekern.backends import use_backend
    dev = torch.device("cuda")
    W = _weight_any(layout, M, K, dtype, dev)
    A = to_sparse(W, layout=layout)
    x = torch.randn(N, K, device=dev, dtype=dtype)
    b = torch.randn(M, device=dev, dtype=dtype) if bias else None
    with use_backend("cuda"):
        if kind == "linear":  # column-major out, B = x.T
            y = linear(x, A, b)
            ref = torch.nn.functional.linear(x.float(), W.float(), None if b is None else b.float())
        else:  # row-major B and out
            Bm = x.t().contiguous()
            y = torch.ops.sparsekern.spmm(*A.op_args(), Bm, b)
            ref = W.float() @ Bm.float() + (0 if b is None else b.float()[:, None])
    torch.cuda.synchronize()
    return _rel_err(y, ref)


def _weight_any(layout, M, K, dtype, dev):
    if layout == "2:4" and K % 4:
        W = _weight(layout, M, K + 4 - K % 4, dtype, dev)[:, :K]
        return W.contiguous()
    return _weight(layout, M, K, dtype, dev)


def sanitizer_smoke(quick: bool = False) -> int:
    """Run the sanitizer cases; print one line each; return the number of failures."""
    # quick (racecheck, ~10x slower per case): float16 only, since a shared-memory race does
    # not depend on the element type; the small, mid and largest-N tiles.
    cases = []
    for dtype in ((torch.float16,) if quick else (torch.float16, torch.bfloat16)):
        for (M, K, N) in (SANITIZE_2_4[:3] + SANITIZE_2_4[-1:] if quick else SANITIZE_2_4):
            for kind in ("linear", "rowmajor"):
                cases.append(("2:4", M, K, N, dtype, kind, kind == "linear"))
    for (M, K, N) in SANITIZE_CSC:
        cases.append(("csc", M, K, N, torch.float16, "linear", True))
    failures = 0
    for c in cases:
        try:
            err = _sanitize_case(*c)
            ok = err < 2e-2
        except Exception as e:  # noqa: BLE001 (report, keep going)
            err, ok = float("nan"), False
            print(f"  error: {type(e).__name__}: {e}")
        failures += not ok
        print(f"{'ok ' if ok else 'BAD'} {c[0]} M={c[1]} K={c[2]} N={c[3]} {c[4]} {c[5]} "
              f"bias={c[6]} rel_err={err:.2e}", flush=True)
    return failures


# ---------------------------------------------------------------------------------------------
# Where a public call's time goes: the op path (sk.linear and SparseLinear, nothing forced, so
# gpu_choice dispatches) under torch.profiler, against the kernel alone. On the H200 the op
# took 0.17-0.25 ms per call against 0.02-0.03 ms for the kernel; this names the parts
# (device syncs show as cudaStreamSynchronize / aten::item / aten::equal rows).
PROFILE_CASES = [("2:4", 4096, 4096, 1, torch.float16), ("csc", 4096, 4096, 1, torch.float16)]


def profile_op_path(device: str = "cuda", calls: int = 50, row_limit: int = 25,
                    cases=None) -> List[Dict[str, object]]:
    """Per case: the median wall time per call of sk.linear, SparseLinear and dense F.linear
    (host clock, synchronized), and torch.profiler's table of the sk.linear calls sorted by
    self CPU time. Returns [{"case", "ms": {...}, "table": str}]. Runs on CPU tensors too
    (device="cpu"), where the table lists no CUDA rows."""
    import time
    from sparsekern.formats import to_sparse
    from sparsekern.functional import linear
    from sparsekern.nn import SparseLinear
    dev = torch.device(device)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    activities = [torch.profiler.ProfilerActivity.CPU]
    if dev.type == "cuda":
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    out = []
    for (layout, M, K, N, dtype) in (cases or PROFILE_CASES):
        W = _weight(layout, M, K, dtype, dev)
        A = to_sparse(W, layout=layout)
        layer = SparseLinear(A, None)
        x = torch.randn(N, K, device=dev, dtype=dtype)
        fns = {"sk.linear": lambda: linear(x, A), "SparseLinear": lambda: layer(x),
               "dense F.linear": lambda: torch.nn.functional.linear(x, W)}
        ms = {}
        with torch.no_grad():
            for name, fn in fns.items():
                for _ in range(5):  # warm-up: repack, dispatch measurement, compilation
                    fn()
                sync()
                times = []
                for _ in range(calls):
                    t0 = time.perf_counter()
                    fn()
                    sync()
                    times.append((time.perf_counter() - t0) * 1e3)
                ms[name] = sorted(times)[len(times) // 2]
            with torch.profiler.profile(activities=activities) as prof:
                for _ in range(calls):
                    fns["sk.linear"]()
                sync()
        table = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=row_limit)
        out.append({"case": f"{layout} {M}x{K} N={N} {dtype}", "ms": ms, "table": table})
    return out


__all__ = ["time_cuda_kernels", "format_table", "probe_semi24_layout", "probe_report",
           "sanitizer_smoke", "profile_op_path", "main"]


def main(argv=None) -> int:
    """``python -m sparsekern.bench.cuda_selftime [--json PATH] [--probe PATH]
    [--sanitize [--quick]] [--profile PATH [--device D]]``: time the cases, print the table
    and write the rows as JSON (default $OUT/cuda_selftime.json when $OUT is set); --probe
    writes the single-nonzero 2:4 layout probe instead; --sanitize runs the small
    compute-sanitizer cases; --profile profiles the public op path (profile_op_path)."""
    import argparse
    import json
    import os

    p = argparse.ArgumentParser(prog="python -m sparsekern.bench.cuda_selftime")
    p.add_argument("json_path", nargs="?", default=None)
    p.add_argument("--json", dest="json_opt", default=None)
    p.add_argument("--probe", default=None, metavar="PATH")
    p.add_argument("--sanitize", action="store_true")
    p.add_argument("--quick", action="store_true")
    p.add_argument("--profile", default=None, metavar="PATH",
                   help="profile the public op path (sk.linear) and write the tables to PATH")
    p.add_argument("--device", default="cuda")
    args = p.parse_args(argv)
    if args.profile:
        res = profile_op_path(args.device)
        with open(args.profile, "w") as f:
            for r in res:
                f.write(f"== {r['case']}: median ms per call {r['ms']}\n{r['table']}\n")
        for r in res:
            print(f"profile {r['case']}: " + ", ".join(f"{k} {v:.4f} ms"
                                                     for k, v in r["ms"].items()))
        return 0
    if args.probe:
        bad = probe_report(args.probe)
        print(open(args.probe).read().splitlines()[0] if bad == 0 else open(args.probe).read())
        print(f"probe: {bad} mismatches -> {args.probe}")
        return 1 if bad else 0
    if args.sanitize:
        return 1 if sanitizer_smoke(args.quick) else 0
    path = args.json_opt or args.json_path or (
        os.path.join(os.environ["OUT"], "cuda_selftime.json") if os.environ.get("OUT") else None)
    rows: List[Dict[str, object]] = []

    def on_row(row):  # written after every case: a timeout keeps what was measured
        rows.append(row)
        if path:
            with open(path, "w") as f:
                json.dump(rows, f, indent=1)
        print(format_table([row]).splitlines()[-1], flush=True)

    time_cuda_kernels(on_row=on_row)
    print(format_table(rows))
    return 1 if any("error" in r for r in rows) else 0


if __name__ == "__main__":
    raise SystemExit(main())
