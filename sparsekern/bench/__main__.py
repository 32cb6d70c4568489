"""``python -m sparsekern.bench``: run the benchmark matrix and write the report.

    python -m sparsekern.bench [--quick] [--layout L ...] [--device cpu|cuda] [--out DIR]
    python -m sparsekern.bench --render bench/results/cpu-full.json   # README section

Writes DIR/NAME.json (every raw figure + machine facts), DIR/NAME.md (all tables) and
DIR/NAME-<layout>.png (speedup vs sparsity), and prints the tables. --quick runs a
representative subset (about 1-2 minutes on 2 CPU cores); the default is the full matrix.
"""
from __future__ import annotations

import argparse
import os
import re
import shlex
import sys
import time
import warnings

DEFAULT_OUT = os.path.join("bench", "results")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m sparsekern.bench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="representative subset (minutes)")
    p.add_argument("--layout", action="append", default=[],
                   help="only these layouts: 2:4, bsr, csc, or a variant such as bsr32x32, "
                        "csc-relu (repeat or comma-separate)")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    p.add_argument("--dtype", choices=("float32", "float16", "bfloat16"), default=None,
                   help="default: float32 on cpu, float16 on cuda")
    p.add_argument("--out", default=DEFAULT_OUT, help=f"output folder (default {DEFAULT_OUT})")
    p.add_argument("--name", default=None, help="file stem (default DEVICE[-GPU]-MODE)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads (default: all)")
    p.add_argument("--min-time", type=float, default=None,
                   help="seconds of timed calls per candidate (default 0.05 quick, 0.2 full)")
    p.add_argument("--no-models", action="store_true", help="skip the end-to-end models")
    p.add_argument("--models-only", action="store_true", help="only the end-to-end models")
    p.add_argument("--no-plots", action="store_true")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--render", metavar="JSON", default=None,
                   help="print the README results section of a results file and exit")
    p.add_argument("--short", action="store_true", help="with --render: a short summary")
    return p.parse_args(argv)


def _layouts(values):
    return [v.strip() for item in values for v in item.split(",") if v.strip()]


def _slug(s: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", s.lower()).strip("-")


def default_name(device: str, quick: bool, layouts) -> str:
    parts = [device]
    if device == "cuda":
        import torch
        parts.append(_slug(torch.cuda.get_device_name()).replace("nvidia-", ""))
    parts.append("quick" if quick else "full")
    if layouts:
        parts.append(_slug("-".join(layouts)))
    return "-".join(parts)


def render(path: str, short: bool) -> int:
    from . import report
    doc = report.load(path)
    print(report.short_table(doc) if short else report.render_readme(doc), end="\n")
    return 0


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.render:
        return render(args.render, args.short)

    import torch

    from . import cases as cases_mod
    from . import e2e, machine, plots, report, runner, selftime
    from .timing import FULL_TIMER, QUICK_TIMER, CudaTimerSettings, TimerSettings

    if args.device == "cuda" and not torch.cuda.is_available():
        print("error: --device cuda but torch sees no CUDA device", file=sys.stderr)
        return 2
    layouts = _layouts(args.layout)
    dtype = getattr(torch, args.dtype or ("float16" if args.device == "cuda" else "float32"))
    mode = "quick" if args.quick else "full"
    all_cases = cases_mod.matrix(mode)
    try:
        todo = cases_mod.select_layouts(all_cases, layouts)
    except ValueError as e:
        print(f"error: --layout: {e}", file=sys.stderr)
        return 2
    timer = TimerSettings(**(QUICK_TIMER if args.quick else FULL_TIMER).to_dict())
    cuda_timer = CudaTimerSettings(min_time=0.05 if args.quick else 0.1)
    if args.min_time is not None:
        timer.min_time = cuda_timer.min_time = args.min_time
    model_names = e2e.QUICK_MODELS if args.quick else e2e.FULL_MODELS
    variants = [v for v in e2e.VARIANTS if not layouts or v.layout in layouts
                or any(c.layout == v.layout for c in todo)]
    if args.no_models:
        model_names = ()
    if args.models_only:
        todo = []
    name = args.name or default_name(args.device, args.quick, layouts)
    started = time.time()

    with machine.ThreadSetting(args.threads) as threads:
        calibration = machine.calibrate(args.device)
        s = runner.RunSettings(device=args.device, dtype=dtype, timer=timer, cuda_timer=cuda_timer,
                               max_call_time=0.5 if args.quick else 2.0,
                               balance=calibration["balance_flop_per_byte"])
        argv_used = sys.argv[1:] if argv is None else list(argv)
        doc = {"schema": report.SCHEMA, "name": name, "mode": mode, "device": args.device,
               "command": " ".join(["python -m sparsekern.bench"] +
                                   [shlex.quote(a) for a in argv_used]),
               "started": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started)),
               "elapsed_s": 0.0, "settings": dict(s.to_dict(), threads=threads.threads),
               "machine": machine.facts(args.device), "calibration": calibration,
               "cases": [], "models": []}
        print(f"sparsekern.bench: {len(todo)} cases, models {list(model_names)} on {args.device} "
              f"({threads.threads} threads, {runner.dtype_name(dtype)}) -> {args.out}/{name}.*",
              file=sys.stderr)
        interrupted = False
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)
                runner.run_cases(todo, s, progress=not args.no_progress,
                                 on_result=doc["cases"].append)
                if args.device == "cuda":  # before the models: other teams wait for these
                    doc["selftime"] = selftime.collect("cuda")
                if model_names and variants:
                    doc["models"] = e2e.run_models(model_names, s, variants=variants,
                                                   progress=not args.no_progress)
        except KeyboardInterrupt:
            interrupted = True
            doc["interrupted"] = True
            print("interrupted: writing what was measured", file=sys.stderr)
    doc["elapsed_s"] = time.time() - started
    json_path = report.write_json(doc, os.path.join(args.out, f"{name}.json"))
    problems = report.document_problems(doc)  # after writing: a harness bug loses no data
    if problems:
        print("error: the results break the schema:\n  " + "\n  ".join(problems[:20]),
              file=sys.stderr)
        return 1
    md = report.full_report(doc)
    with open(os.path.join(args.out, f"{name}.md"), "w") as f:
        f.write(md)
    pngs = []
    if not args.no_plots and doc["cases"]:
        try:
            pngs = plots.plot_speedups(doc, args.out, name)
        except ImportError as e:  # matplotlib is optional on a bare GPU box
            print(f"plots skipped: {e}", file=sys.stderr)
    print(md)
    print(f"wrote {json_path}, {os.path.join(args.out, name + '.md')}"
          + (f", {len(pngs)} PNG" if pngs else "") + f" in {doc['elapsed_s']:.0f} s",
          file=sys.stderr)
    return 130 if interrupted else 0


if __name__ == "__main__":
    sys.exit(main())
