"""Where the dense all-MiniLM-L6-v2 spends its time, and what that bounds (Amdahl).

For each example of the main job (1 sentence, 32 sentences; the demo's own inputs):

1. torch.profiler over repeated forward calls: the share of wall time inside the 36 encoder
   Linear layers (``aten::linear``, inclusive), attention (``aten::scaled_dot_product_attention``),
   LayerNorm, GELU, embeddings, and the rest (elementwise ops, Python and module overhead).
2. Without a profiler: the model timed in alternation with a copy whose 36 Linear layers are
   stubs returning their output instantly (sparsekern.auto.table.measure_model): the time
   outside the Linear layers, so the best end-to-end speedup sparse Linear layers can give.
3. The latency table of the 36 layers (2:4 at 50%, CSC at 50/70/80/90%; sparsekern's kernels
   as built): the Linear layers' time ratio sparse/dense when every layer is at that
   sparsity in its fastest format, or dense where no format is faster ("auto"), and the
   end-to-end bound it gives with the measured Linear fraction f (Amdahl: 1 / (1 - f + f r));
   also every layer forced sparse, and only the 12 FFN layers sparse.

    flock /work/wt/timing.lock python tools/minilm_profile.py --out /tmp/minilm-profile.json
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sparsekern.auto.measure import Grid, MeasureSettings  # noqa: E402
from sparsekern.auto.signature import call, input_label  # noqa: E402
from sparsekern.auto.table import build_table, measure_model  # noqa: E402
from sparsekern.demo.minilm_job import linear_names, text_data, FFN, ATTENTION  # noqa: E402
from sparsekern.models.minilm import load_minilm  # noqa: E402

CATEGORIES = {"linear (36 Linear layers)": "aten::linear",
              "attention (sdpa)": "aten::scaled_dot_product_attention",
              "layer_norm": "aten::layer_norm", "gelu": "aten::gelu",
              "embedding": "aten::embedding"}
SPARSITIES = (0.5, 0.7, 0.8, 0.9)


@torch.no_grad()
def profile_shares(model, x, calls: int) -> dict:
    """{category: fraction of wall time} from torch.profiler over ``calls`` forward calls."""
    for _ in range(3):
        call(model, x)
    from torch.profiler import ProfilerActivity, profile
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        t = time.perf_counter()
        for _ in range(calls):
            call(model, x)
        wall = time.perf_counter() - t
    totals = {e.key: e.cpu_time_total * 1e-6 for e in prof.key_averages()}
    out = {k: totals.get(op, 0.0) / wall for k, op in CATEGORIES.items()}
    out["rest (elementwise ops, Python, module overhead)"] = 1.0 - sum(out.values())
    return {"wall_ms_per_call_under_profiler": 1e3 * wall / calls, "shares": out}


def best_ratio(entry, sparsity: float, forced: bool) -> float:
    """Fastest format's time / dense at ``sparsity`` (2:4 only at 0.5); capped at 1 (dense
    kept) unless ``forced``."""
    dens = 1.0 - sparsity
    ts = [entry.predict(f, dens) for f in entry.entry["formats"]
          if f != "2:4" or abs(sparsity - 0.5) < 1e-9]
    ts = [t for t in ts if t is not None]
    r = min(ts) / entry.dense_s if ts else 1.0
    return r if forced else min(r, 1.0)


def weighted_ratio(table, label: str, names, chosen, sparsity: float, forced: bool) -> float:
    """Sum over the 36 layers of (sparse time if chosen else dense) / sum of dense times."""
    dense = sum(table.layers[n][label].dense_s for n in names)
    sparse = sum(table.layers[n][label].dense_s *
                 (best_ratio(table.layers[n][label], sparsity, forced) if n in chosen else 1.0)
                 for n in names)
    return sparse / dense


def amdahl(linear_fraction: float, ratio: float) -> float:
    """End-to-end speedup when the Linear layers (``linear_fraction`` of the time) take
    ``ratio`` of their dense time and the rest is unchanged."""
    return 1.0 / ((1.0 - linear_fraction) + linear_fraction * ratio)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=None, help="write the figures as JSON here")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    model, tok = load_minilm()
    data = text_data(tok, sentences=(1, 32))
    names = linear_names(model, FFN + ATTENTION)
    ffn = linear_names(model, FFN)
    res = {"threads": args.threads, "torch": torch.__version__, "load_average_start": os.getloadavg()}
    for x, lab in zip(data.examples, data.labels):
        r = {"input": input_label(x)}
        r["profiler"] = profile_shares(model, x, 20 if lab == "1 sentence" else 4)
        dense_s, other_s = measure_model(model, x, names, context="warm")
        r["stub"] = {"dense_ms": dense_s * 1e3, "outside_linear_ms": other_s * 1e3,
                     "linear_fraction": 1 - other_s / dense_s,
                     "bound_if_linear_free": dense_s / other_s}
        res[lab] = r
        print(f"{lab} {r['input']}: profiler ({r['profiler']['wall_ms_per_call_under_profiler']:.2f} "
              f"ms/call) " + ", ".join(f"{k} {v:.1%}" for k, v in r["profiler"]["shares"].items()))
        print(f"  stubbed Linear layers: dense {dense_s * 1e3:.2f} ms, outside the Linear layers "
              f"{other_s * 1e3:.2f} ms: Linear fraction {r['stub']['linear_fraction']:.1%}, "
              f"end-to-end bound with free Linear layers {r['stub']['bound_if_linear_free']:.2f}x",
              flush=True)
    settings = MeasureSettings(grid=Grid(sparsities=SPARSITIES, layouts=("2:4", "csc")),
                               context=os.environ.get("PROFILE_CONTEXT", "auto"))
    table = build_table(model, data.examples, settings=settings, cache=False)
    for lab, label in zip(data.labels, table.shapes):
        f = res[lab]["stub"]["linear_fraction"]
        rows = {}
        for s in SPARSITIES:
            r_all = weighted_ratio(table, label, names, set(names), s, False)
            r_forced = weighted_ratio(table, label, names, set(names), s, True)
            r_ffn = weighted_ratio(table, label, names, set(ffn), s, False)
            rows[f"{s:.0%}"] = {
                "linear_ratio_auto": r_all, "all_auto": amdahl(f, r_all),
                "all_forced": amdahl(f, r_forced), "ffn_only_auto": amdahl(f, r_ffn),
                "layer_ratio": {kind: best_ratio(table.layers[n][label], s, True)
                                for kind, n in (("384x384", names[0]), ("1536x384", ffn[0]),
                                                ("384x1536", ffn[1]))}}
        res[lab]["table"] = {"model_ms": table.model_s[label] * 1e3,
                             "other_ms": table.other_s[label] * 1e3,
                             "sum_dense_layers_ms": 1e3 * sum(table.layers[n][label].dense_s
                                                              for n in names),
                             "amdahl": rows}
        print(f"{lab}: table: model {table.model_s[label] * 1e3:.2f} ms, outside "
              f"{table.other_s[label] * 1e3:.2f} ms, 36 layers dense "
              f"{res[lab]['table']['sum_dense_layers_ms']:.2f} ms")
        for k, v in rows.items():
            lr = ", ".join(f"{a} {b:.2f}" for a, b in v["layer_ratio"].items())
            print(f"  {k}: Linear time x{v['linear_ratio_auto']:.2f}; end-to-end bound "
                  f"{v['all_auto']:.2f}x (auto), {v['all_forced']:.2f}x "
                  f"(every layer sparse), FFN only {v['ffn_only_auto']:.2f}x; sparse/dense per "
                  f"layer: {lr}")
    res["load_average_end"] = os.getloadavg()
    if args.out:
        Path(args.out).write_text(json.dumps(res, indent=2) + "\n")
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
