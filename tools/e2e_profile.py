"""Where the pruned all-MiniLM-L6-v2 spends its time at the end-to-end benchmark's shapes
(issue 14, item 5): how much is sparsekern's spmm and how much everything else.

For the dense model and each of bench/e2e_peers.py's pruned variants (90% unstructured ->
csc, 90% 32x32 blocks -> bsr, 2:4), at 1 sentence x 16 tokens and 32 sentences x 64 tokens,
eager, under torch.profiler over ``--calls`` forward calls: the share of wall time in the 36
Linear layers (``sparsekern::spmm`` for the sparse models, ``aten::linear`` for dense),
attention (sdpa), LayerNorm, GELU and the rest; and the milliseconds per call of each.
Wall times under the profiler are inflated a little by its own bookkeeping; the shares are
what matters.

    flock /work/wt/timing.lock python tools/e2e_profile.py [--threads 2] [--calls 10]
        [--out bench/results/e2e-profile.json]
"""
from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import sparsekern as sk  # noqa: E402
from sparsekern.models.minilm import load_minilm  # noqa: E402
from sparsekern.prune import prune_model  # noqa: E402

VARIANTS = {"dense": None, "90% unstructured": ("fine", 0.9, "csc"),
            "90% 32x32 blocks": ((32, 32), 0.9, "bsr"), "2:4": ("2:4", None, "2:4")}
SHAPES = ((1, 16), (32, 64))
CATEGORIES = {"linear": ("sparsekern::spmm", "aten::linear"),
              "attention": ("aten::scaled_dot_product_attention",),
              "layer_norm": ("aten::layer_norm",), "gelu": ("aten::gelu",)}


def variant_model(dense: torch.nn.Module, variant: str) -> torch.nn.Module:
    spec = VARIANTS[variant]
    if spec is None:
        return dense
    gran, ratio, layout = spec
    m = copy.deepcopy(dense)
    prune_model(m, ratio, granularity=gran, criterion="l1")
    return sk.sparsify(m, layout=layout)


def inputs(batch: int, tokens: int):
    """The fixed token ids e2e_peers.py uses (int64 [batch, tokens]) and an all-ones mask."""
    ids = (torch.arange(batch * tokens, dtype=torch.int64) * 7919 % 29000 + 1000)
    return ids.reshape(batch, tokens), torch.ones(batch, tokens, dtype=torch.int64)


@torch.inference_mode()
def profile(model, batch: int, tokens: int, calls: int) -> dict:
    """{"ms_per_call", "ms": {category: ms per call}} over ``calls`` profiled calls."""
    ids, mask = inputs(batch, tokens)
    for _ in range(3):
        model(ids, mask)
    from torch.profiler import ProfilerActivity, profile as tprofile
    with tprofile(activities=[ProfilerActivity.CPU]) as prof:
        t = time.perf_counter()
        for _ in range(calls):
            model(ids, mask)
        wall = time.perf_counter() - t
    totals = {e.key: e.cpu_time_total * 1e-3 / calls for e in prof.key_averages()}
    ms = {}
    for cat, keys in CATEGORIES.items():
        # spmm runs inside aten::linear only when it is not a SparseLinear: take the first found
        ms[cat] = next((totals[k] for k in keys if k in totals), 0.0)
    per_call = 1e3 * wall / calls
    ms["rest"] = per_call - sum(ms.values())
    return {"ms_per_call": per_call, "ms": ms}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--calls", type=int, default=10)
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    dense, _ = load_minilm()
    rows = []
    for variant in VARIANTS:
        model = variant_model(dense, variant)
        for b, t in SHAPES:
            r = profile(model, b, t, args.calls if b == 1 else max(2, args.calls // 2))
            rows.append({"variant": variant, "shape": f"{b}x{t}", **r})
            cells = " ".join(f"{k} {v:.2f} ({100 * v / r['ms_per_call']:.0f}%)"
                             for k, v in r["ms"].items())
            print(f"{variant:18s} {b}x{t}: {r['ms_per_call']:.2f} ms/call: {cells}", flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps({"threads": args.threads, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
