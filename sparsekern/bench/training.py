"""One training step of a SparseLinear against nn.Linear (sparse fine-tuning and training).

One call = ``y = layer(x); y.backward(g)`` with x requiring grad (the input gradient, Aᵀ·G)
and the layer's parameters too (the weight / stored values' gradient), then an SGD step on
the layer's parameters (lr 1e-4): what one training step costs per layer. The step matters:
it changes the weight every call, as training does, so nothing cached per weight value
(sparsekern's CSC row repack) is reused across calls. Shapes are real: all-MiniLM-L6-v2's FFN (1536×384) at 2048 tokens
and a 4096² projection at 512 tokens; layouts 2:4, BSR 32×32 at 90% and CSC at 90%.
The dense and sparse layers are timed interleaved (sparsekern.timing.time_interleaved),
warm; a call slower than the timer's ``max_candidate_time`` is timed once more only
(``reps`` says how many samples a figure has).

Record: {"shape", "M", "K", "tokens", "variant", "layout", "sparsity", "isa", "dense":
timing, "sparse": timing | None, "first_call_s": {"dense", "sparse"}, "speedup": dense /
sparse | None, "status": "ok" | "failed", "reason"}.
"""
from __future__ import annotations

import time
from typing import Callable, List, Optional, Tuple

import torch
from torch import nn

from ..timing.machine import extension_isa
from ..timing.timers import TimerSettings, time_interleaved
from . import magnitude

#: (name, M, K, tokens).
SHAPES = (("minilm.ffn", 1536, 384, 2048), ("4096²", 4096, 4096, 512))
#: (variant, layout, blocksize, sparsity).
VARIANTS = (("2:4", "2:4", None, 0.5), ("bsr32x32", "bsr", (32, 32), 0.9),
            ("csc", "csc", None, 0.9))


def _pruned(M: int, K: int, layout: str, bs, sparsity: float, gen) -> nn.Linear:
    lin = nn.Linear(K, M)
    with torch.no_grad():
        W = torch.randn(M, K, generator=gen) / K ** 0.5
        lin.weight.copy_(magnitude.prune(W, layout, sparsity, bs))
    return lin


def step_fn(layer: nn.Module, g: torch.Tensor, lr: float = 1e-4) -> Callable:
    """fn(x): one forward + backward of ``layer`` (gradients cleared first), then an SGD step
    on its parameters."""
    opt = torch.optim.SGD(layer.parameters(), lr=lr)

    def fn(x):
        opt.zero_grad(set_to_none=True)
        x.grad = None
        layer(x).backward(g)
        opt.step()
    return fn


def _first(fn, x) -> Tuple[Optional[float], Optional[str]]:
    try:
        t0 = time.perf_counter()
        fn(x)
        return time.perf_counter() - t0, None
    except Exception as e:  # a failing backward is a result, not a crash of the run
        return None, f"{type(e).__name__}: {(str(e).splitlines() or [''])[0][:200]}"


def run_case(name: str, M: int, K: int, tokens: int, variant: tuple, timer: TimerSettings,
             seed: int = 0) -> dict:
    from ..nn import SparseLinear
    vname, layout, bs, sp = variant
    gen = torch.Generator().manual_seed(seed)
    dense = _pruned(M, K, layout, bs, sp, gen)
    sparse = SparseLinear.from_dense(dense, layout, bs)
    x = torch.randn(tokens, K, generator=gen).requires_grad_(True)
    g = torch.randn(tokens, M, generator=gen)
    fns = {"dense": step_fn(dense, g), "sparse": step_fn(sparse, g)}
    rec = {"shape": name, "M": M, "K": K, "tokens": tokens, "variant": vname, "layout": layout,
           "sparsity": sp, "isa": extension_isa(), "dense": None, "sparse": None,
           "first_call_s": {}, "speedup": None, "status": "ok", "reason": ""}
    second = {}
    for n, fn in fns.items():
        rec["first_call_s"][n], err = _first(fn, x)   # one-time setup included
        if err:
            rec.update(status="failed", reason=f"{n}: {err}")
            return rec
        second[n], _ = _first(fn, x)                   # sizes the timer, stands in for warm-up
    res = time_interleaved({n: (f, x) for n, f in fns.items()}, timer, first_calls=second)
    rec["dense"], rec["sparse"] = res["dense"], res["sparse"]
    rec["speedup"] = res["dense"]["median_s"] / res["sparse"]["median_s"]
    return rec


def run(timer: TimerSettings, shapes=SHAPES, variants=VARIANTS, seed: int = 0,
        progress: Optional[Callable[[str], None]] = None) -> List[dict]:
    """Every shape x variant; one record each (module docstring)."""
    out = []
    for name, M, K, tokens in shapes:
        for v in variants:
            out.append(run_case(name, M, K, tokens, v, timer, seed))
            if progress is not None:
                progress(f"fwd+bwd {name} {v[0]} done")
    return out


def markdown(recs: List[dict]) -> str:
    """The forward+backward table."""
    def ms(t):
        return "—" if not t else f"{t['median_s'] * 1e3:.3g} ±{50 * t['iqr_s'] / t['median_s']:.0f}% (n={t['reps']})"
    rows = ["| shape M×K | tokens | layout | sparsity | ISA | nn.Linear ms | SparseLinear ms | "
            "speedup |", "|---|---:|---|---:|---|---:|---:|---:|"]
    for r in recs:
        sx = "—" if r["speedup"] is None else f"**{r['speedup']:.2f}x**"
        if r["status"] != "ok":
            sx = f"failed: {r['reason']}"
        rows.append(f"| {r['shape']} {r['M']}×{r['K']} | {r['tokens']} | {r['variant']} | "
                    f"{round(100 * r['sparsity'])}% | {r['isa'] or '—'} | {ms(r['dense'])} | "
                    f"{ms(r['sparse'])} | {sx} |")
    return "\n".join(rows)
