"""``python -m sparsekern.bench``: run the benchmark matrix and write the report.

    python -m sparsekern.bench [--quick] [--layout L ...] [--device cpu|cuda] [--out DIR]
    python -m sparsekern.bench --contention          # quiet vs one busy core, per layout
    python -m sparsekern.bench --render bench/results/cpu-full.json   # README section

Writes DIR/NAME.json (every raw figure + machine facts), DIR/NAME.md (all tables) and
DIR/NAME-<layout>.png (speedup vs sparsity), and prints the tables. --quick runs a
representative subset (about 1-3 minutes on 2 CPU cores); the default is the full matrix.
DIR defaults to a fresh folder ./sparsekern-bench/NAME-<UTC time>/ (never the committed
bench/results/ unless --out says so).

Shared machines: the run first measures the machine's load (sparsekern.timing.detect_load:
runnable threads of other processes, steal, load average), says what it saw, and uses the
thread count it recommends unless --threads is given; it warns when the machine was busy
or when timings came out as whole scheduler slices ("12 ±0%" ms). --contention measures
the load too (keeping its own thread count) and warns when its quiet phases were not quiet.

Honest dense baseline: run as ``python -m sparsekern.bench``, the process re-executes itself
once without OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE (guards for old OpenBLAS builds that
pin NumPy's sgemm to slower kernels) before NumPy loads, and with OPENBLAS_THREAD_TIMEOUT=4
unless it is set: OpenBLAS's threads otherwise spin for a while after each call, and a
torch call timed in turn with NumPy's then waits for its own second thread (torch's dense
GEMV 25x slower, NumPy's 1.3x, which inflated the best dense time up to 2x:
bench/results/blas-interference-2026-12-03). What it removed and set, and the OpenBLAS
kernel that ran (threadpoolctl), are recorded under "dense_env". --keep-blas-env keeps the
environment as it is.

Modes: --render, --contention, --models-only, or the benchmark run (--device cpu|cuda). An
option that the chosen mode does not use is an error (exit 2) when it is on the command
line, even at its default value (OPTION_MODES lists each option's modes).
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import sys
import time
import warnings

from .._cli import int_at_least, output_folder_problem, positive_float

#: Fresh output folders go under this folder of the current directory.
DEFAULT_OUT_ROOT = "sparsekern-bench"
#: Environment variables that slow NumPy's OpenBLAS on this project's machines; the
#: benchmark's own process runs without them (see the module docstring).
BLAS_ENV = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")
#: Set by the re-executed process: the JSON of the BLAS_ENV values it was started without.
UNSET_ENV_VAR = "SPARSEKERN_BENCH_UNSET_BLAS_ENV"
#: Set for the benchmark's process unless already set (see the module docstring): OpenBLAS's
#: threads spin at most 2^4 cycles after a call instead of blocking torch's next call.
SPIN_ENV = {"OPENBLAS_THREAD_TIMEOUT": "4"}


def build_parser() -> argparse.ArgumentParser:
    """The command line's options (checked further by :func:`check_args`)."""
    p = argparse.ArgumentParser(prog="python -m sparsekern.bench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="representative subset (minutes)")
    p.add_argument("--layout", action="append", default=[],
                   help="only these layouts: 2:4, bsr, csc, or a variant such as bsr32x32, "
                        "csc-relu (repeat or comma-separate)")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    p.add_argument("--dtype", choices=("float32", "float16", "bfloat16"), default=None,
                   help="default: float32 on cpu, float16 on cuda")
    p.add_argument("--out", default=None,
                   help=f"output folder (default: a fresh ./{DEFAULT_OUT_ROOT}/NAME-<time>/)")
    p.add_argument("--name", type=file_stem, default=None,
                   help="file stem of the outputs: letters, digits and . _ + - (default "
                        "DEVICE[-GPU]-MODE)")
    p.add_argument("--threads", type=int_at_least(1), default=None,
                   help="CPU threads, >= 1 (default: what the load detection recommends; "
                        "--contention: every usable CPU, and at most that many)")
    p.add_argument("--contention", action="store_true",
                   help="quiet vs loaded (own busy processes pinned to --busy-cores): "
                        "dense and the three layouts at N=1, 64 on 2048² and 4096²")
    p.add_argument("--busy-cores", default=None,
                   help="--contention: comma-separated CPUs for the busy processes "
                        "(default: the last usable CPU)")
    p.add_argument("--busy-nice", type=int, default=0,
                   help="--contention: niceness of the busy processes (default 0; 19: a "
                        "background job)")
    p.add_argument("--busy-kind", default="spin", choices=("spin", "torch"),
                   help="--contention: what each busy process runs: a spinning loop, or a torch "
                        "job with 2 intra-op threads (default spin)")
    p.add_argument("--busy-unpinned", action="store_true",
                   help="--contention: leave the busy processes unpinned (one per --busy-cores "
                        "entry; the scheduler places them)")
    p.add_argument("--phases", type=int_at_least(1), default=2,
                   help="--contention: quiet/loaded pairs per case (default 2)")
    p.add_argument("--calls", type=int_at_least(3), default=20,
                   help="--contention: calls per candidate per phase (default 20)")
    p.add_argument("--backward", action="store_true",
                   help="also time a training step (forward, backward, SGD) of SparseLinear "
                        "vs nn.Linear (real shapes; always part of the full run)")
    p.add_argument("--keep-blas-env", action="store_true",
                   help="keep OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE (default: unset for "
                        "the run, see the module docstring)")
    p.add_argument("--min-time", type=positive_float, default=None,
                   help="seconds of timed calls per candidate (default 0.05 quick, 0.2 full)")
    p.add_argument("--no-models", action="store_true", help="skip the end-to-end models")
    p.add_argument("--models-only", action="store_true", help="only the end-to-end models")
    p.add_argument("--no-plots", action="store_true")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--render", metavar="JSON", default=None,
                   help="print the README results section of a results file and exit")
    p.add_argument("--short", action="store_true", help="with --render: a short summary")
    return p


def parse_args(argv=None) -> argparse.Namespace:
    """Parsed and checked (:func:`check_args`) options; a bad one exits with an argparse
    error (usage, "error: argument --flag: ...", status 2) before any work."""
    p = build_parser()
    args = p.parse_args(argv)
    check_args(p, args, given_options(argv))
    return args


#: Characters of a --name (a file stem inside --out): no path separator, nothing a shell or
#: another file system would mangle, no leading dot (a hidden file).
_STEM = re.compile(r"[A-Za-z0-9_+-][A-Za-z0-9._+-]*")


def file_stem(text: str) -> str:
    """An argparse type: a file name stem (--name), never a path."""
    if not _STEM.fullmatch(text):
        raise argparse.ArgumentTypeError(
            f"expected a file name stem of letters, digits and . _ + - (not starting with "
            f"'.', no path separator), got {text!r}")
    return text


#: The command line's modes, each with how an error names it. One is chosen per command
#: line (:func:`mode_of`): --render, else --contention, else --models-only, else the
#: benchmark run on --device cpu or cuda.
MODES = {
    "render": "--render (it prints a results file and exits)",
    "contention": "--contention (it times its own fixed cases)",
    "models": "--models-only (it times the end-to-end models only)",
    "cpu": "the benchmark run on CPU",
    "cuda": "the benchmark run on --device cuda",
}
_RUN = ("cpu", "cuda", "models")
_WORK = _RUN + ("contention",)
#: Every option of :func:`build_parser`: (the modes that use it, where it applies, in words).
#: An option present on the command line in any other mode is an error (:func:`check_args`);
#: an option missing here is a programming error (tests/bench/test_bench_cli.py).
OPTION_MODES = {
    "--quick": (_RUN, "the benchmark run"),
    "--layout": (_RUN, "the benchmark run"),
    "--device": (_WORK, "the benchmark run and --contention (CPU only)"),
    "--dtype": (_RUN, "the benchmark run"),
    "--out": (_WORK, "the benchmark run and --contention"),
    "--name": (_WORK, "the benchmark run and --contention"),
    "--threads": (_WORK, "the benchmark run and --contention"),
    "--contention": (("contention",), "--contention"),
    "--busy-cores": (("contention",), "--contention"),
    "--busy-nice": (("contention",), "--contention"),
    "--busy-kind": (("contention",), "--contention"),
    "--busy-unpinned": (("contention",), "--contention"),
    "--phases": (("contention",), "--contention"),
    "--calls": (("contention",), "--contention"),
    "--backward": (("cpu",), "the benchmark run on CPU without --models-only (the "
                            "training step is timed on CPU only)"),
    "--keep-blas-env": (_WORK, "the benchmark run and --contention"),
    "--min-time": (_RUN, "the benchmark run"),
    "--no-models": (("cpu", "cuda"), "the benchmark run"),
    "--models-only": (("models",), "the benchmark run"),
    # the run without --models-only writes the PNGs; accepted with --models-only too (no
    # plot then either), as bench/gpu_check.sh passes it before any $BENCH_ARGS
    "--no-plots": (_RUN, "the benchmark run"),
    "--no-progress": (_WORK, "the benchmark run and --contention"),
    "--render": (("render",), "--render"),
    "--short": (("render",), "--render JSON (a short summary of a results file)"),
}


def mode_of(args) -> str:
    """The key of :data:`MODES` that ``args`` selects."""
    if args.render:
        return "render"
    if args.contention:
        return "contention"
    if args.models_only:
        return "models"
    return args.device


def given_options(argv=None) -> list:
    """The options present on the command line ``argv`` (default sys.argv[1:]), in the
    parser's order, by their first flag ("--quick"), abbreviations resolved as argparse
    resolves them. Call after a successful parse (a bad value would exit here too)."""
    q = build_parser()
    for a in q._actions:
        a.default = argparse.SUPPRESS
    present = vars(q.parse_args(argv))
    return [a.option_strings[0] for a in q._actions if a.dest in present]


def _dests(p: argparse.ArgumentParser) -> dict:
    """{first flag: dest} of every option but --help."""
    return {a.option_strings[0]: a.dest for a in p._actions
            if a.option_strings and a.dest != "help"}


def _shown(p: argparse.ArgumentParser, args, flag: str) -> str:
    value = getattr(args, _dests(p)[flag])
    if isinstance(value, bool):
        return ""
    if isinstance(value, list):
        value = ",".join(value)
    return f"got {value!r}, but "


def check_args(p: argparse.ArgumentParser, args, given=None) -> None:
    """Conflicting options, options the chosen mode does not use (:data:`OPTION_MODES`),
    CPUs that do not exist, layouts without the cases asked for, an --out that cannot be
    written: each a ``p.error`` naming the flag, before any timing. ``given``: the flags
    present on the command line (:func:`given_options`); None: those that differ from
    their defaults."""
    dests = _dests(p)
    missing = [f for f in dests if f not in OPTION_MODES]
    if missing:
        raise AssertionError(f"options without a row in OPTION_MODES: {missing}")
    if given is None:
        given = [f for f, d in dests.items() if getattr(args, d) != p.get_default(d)]
    if args.models_only and args.no_models:
        p.error("arguments --models-only and --no-models exclude each other")
    mode = mode_of(args)
    ignored = [f for f in given if mode not in OPTION_MODES[f][0]]
    if ignored:
        f = ignored[0]
        also = f"; also not used with it: {', '.join(ignored[1:])}" if ignored[1:] else ""
        p.error(f"argument {f}: {_shown(p, args, f)}it is not used with {MODES[mode]}; {f} "
                f"applies to {OPTION_MODES[f][1]}{also}")
    if mode == "render":
        return
    if mode == "contention":
        _check_contention(p, args)
    else:
        _check_run(p, args, mode)
    if args.out is not None:
        problem = output_folder_problem(args.out)
        if problem:
            p.error(f"argument --out: {problem}")


def usable_cpu_ids() -> list:
    """The CPUs this process may run on (os.sched_getaffinity, else 0 .. cpu_count - 1)."""
    try:
        return sorted(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return list(range(os.cpu_count() or 1))


def _check_contention(p: argparse.ArgumentParser, args) -> None:
    if args.device != "cpu":
        p.error(f"argument --contention: CPU only, got --device {args.device}")
    if not 0 <= args.busy_nice <= 19:
        p.error(f"argument --busy-nice: expected a niceness in 0 .. 19, got {args.busy_nice}")
    usable = usable_cpu_ids()
    if args.threads is not None and args.threads > len(usable):
        # more threads than CPUs share cores even when quiet: no quiet baseline to compare
        p.error(f"argument --threads: got {args.threads}, but this process may use "
                f"{len(usable)} CPUs {usable} (os.sched_getaffinity); expected 1 .. "
                f"{len(usable)} with --contention")
    if args.busy_cores is None:
        return
    try:
        cores = [int(c) for c in args.busy_cores.split(",")]
    except ValueError:
        p.error(f"argument --busy-cores: expected comma-separated CPU numbers, got "
                f"{args.busy_cores!r}")
    bad = [c for c in cores if c not in usable]
    if bad:
        p.error(f"argument --busy-cores: CPU(s) {bad} not usable here; expected CPUs among "
                f"{usable} (os.sched_getaffinity), got {args.busy_cores!r}")
    twice = sorted({c for c in cores if cores.count(c) > 1})
    if twice:  # two spinners on one CPU are one busy core, not two
        p.error(f"argument --busy-cores: CPU(s) {twice} given more than once; expected "
                f"distinct CPUs (one busy process each), got {args.busy_cores!r}")


def _check_run(p: argparse.ArgumentParser, args, mode: str) -> None:
    """--layout against what the run times: a known layout; with --models-only one that an
    end-to-end model variant has; with --backward one that the training step has."""
    layouts = _layouts(args.layout)
    if not layouts:
        return
    try:
        plan = run_plan(args.quick, layouts, args.device, models=not args.no_models,
                        models_only=args.models_only, backward=args.backward)
    except ValueError as e:
        p.error(f"argument --layout: {e}")
    from . import e2e, training
    if mode == "models":
        lost = [x for x in layouts if not _variants_of([x], plan["_all_cases"], e2e.VARIANTS,
                                                        lambda v: v.layout)]
        if lost:
            have = sorted({v.layout for v in e2e.VARIANTS})
            p.error(f"argument --layout: got {','.join(layouts)!r}, but no end-to-end model "
                    f"variant has layout {', '.join(map(repr, lost))}; with --models-only "
                    f"expected layouts among {', '.join(have)} (the model variants "
                    f"{', '.join(v.name for v in e2e.VARIANTS)})")
    if args.backward and not plan["training"]:
        from ..formats import layouts as layout_registry
        have = sorted({v[1] for v in training.VARIANTS})
        lowered = [x for x in layout_registry.all_layouts()
                   if x.served_as is not None and x.name not in have]
        copies = (f"; {' and '.join(x.name for x in lowered)} run their backward on "
                  f"{' and '.join(x.served_as.layout for x in lowered)} copies and are not "
                  f"in the training-step table" if lowered else "")
        p.error(f"argument --backward: the training step has no variant for --layout "
                f"{','.join(layouts)!r}; expected a layout among {', '.join(have)} (the "
                f"layouts with backward kernels of their own{copies})")


def _variants_of(layouts, all_cases, variants, layout_of) -> list:
    """The ``variants`` whose layout is one of ``layouts`` or the layout of a case that
    ``layouts`` select ("bsr32x32" -> bsr, "csc-relu" -> csc); all of them for no layouts."""
    from . import cases as cases_mod
    if not layouts:
        return list(variants)
    wanted = set(layouts) | {c.layout for c in cases_mod.select_layouts(all_cases, layouts)}
    return [v for v in variants if layout_of(v) in wanted]


def run_plan(quick: bool, layouts, device: str, models: bool = True,
             models_only: bool = False, backward: bool = False) -> dict:
    """What a benchmark run times: {"cases": [Case], "models": [model name], "variants":
    [e2e.ModelVariant], "training": [training variant]} (and "_all_cases", the mode's
    matrix). Raises ValueError for an unknown layout."""
    from . import cases as cases_mod
    from . import e2e, training
    all_cases = cases_mod.matrix("quick" if quick else "full")
    todo = cases_mod.select_layouts(all_cases, layouts)
    variants = _variants_of(layouts, all_cases, e2e.VARIANTS, lambda v: v.layout)
    names = list(e2e.QUICK_MODELS if quick else e2e.FULL_MODELS) if models and variants else []
    train = []
    if device == "cpu" and not models_only and (backward or not quick):
        train = _variants_of(layouts, all_cases, training.VARIANTS, lambda v: v[1])
    return {"cases": [] if models_only else todo, "models": names,
            "variants": variants if names else [], "training": train, "_all_cases": all_cases}


def plan_summary(plan: dict) -> str:
    """One line: what the run will time (printed before it starts)."""
    models = (f"models {plan['models']} x variants {[v.name for v in plan['variants']]}"
              if plan["models"] else "no models")
    train = (f"training step {[v[0] for v in plan['training']]}" if plan["training"]
             else "no training step")
    return f"{len(plan['cases'])} cases, {models}, {train}"


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


def render_checked(path: str, short: bool) -> int:
    """:func:`render`, with a file that cannot be read or is not a results document an
    argparse-style error naming --render and the file (exit 2)."""
    try:
        return render(path, short)
    except OSError as e:
        problem = f"cannot read {path!r}: {e.strerror or e}"
    except ValueError as e:  # json.JSONDecodeError, or report.check_document's schema errors
        problem = f"{path!r} is not a sparsekern.bench results file (JSON): {e}"
    build_parser().error(f"argument --render: {problem}")
    return 2


def fresh_out_dir(name: str, root: str = DEFAULT_OUT_ROOT) -> str:
    """A folder that does not exist yet: ROOT/NAME-<UTC yyyymmdd-HHMMSS>[-k]."""
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    base = os.path.join(root, f"{name}-{stamp}")
    path, k = base, 1
    while os.path.exists(path):
        k += 1
        path = f"{base}-{k}"
    return path


def blas_env_without(env) -> dict:
    """``env`` without BLAS_ENV and with SPIN_ENV where unset, recording what was removed in
    UNSET_ENV_VAR."""
    removed = {k: env[k] for k in BLAS_ENV if k in env}
    new = {k: v for k, v in env.items() if k not in BLAS_ENV}
    for k, v in SPIN_ENV.items():
        new.setdefault(k, v)
    new[UNSET_ENV_VAR] = json.dumps(removed)
    return new


def reexec_without_blas_env(argv) -> None:
    """Replace this process by ``python -m sparsekern.bench ARGV`` without BLAS_ENV and with
    SPIN_ENV, once (NumPy is already loaded here: torch imports it). No-op when nothing would
    change, when already re-executed, or with --keep-blas-env."""
    if UNSET_ENV_VAR in os.environ or "--keep-blas-env" in argv:
        return
    if not any(k in os.environ for k in BLAS_ENV) and all(k in os.environ for k in SPIN_ENV):
        return
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, [sys.executable, "-m", "sparsekern.bench", *argv],
              blas_env_without(os.environ))


def dense_env() -> dict:
    """What the dense baseline ran with: BLAS_ENV values removed for this run, those still
    set, and the OpenBLAS kernel (threadpoolctl's "architecture") of each loaded OpenBLAS."""
    from . import machine
    try:
        removed = json.loads(os.environ.get(UNSET_ENV_VAR, "{}"))
    except ValueError:
        removed = {}
    kernels = [{k: d.get(k) for k in ("internal_api", "version", "architecture",
                                       "num_threads", "filepath")}
               for d in machine.threadpools() if d.get("internal_api") == "openblas"]
    return {"unset_for_this_run": removed,
            "still_set": {k: os.environ[k] for k in BLAS_ENV if k in os.environ},
            "spin": {k: os.environ.get(k) for k in SPIN_ENV},
            "openblas": kernels}


def choose_threads(requested, out=None):
    """(threads, LoadReport): ``requested`` if given, else the load detection's
    recommendation; says which on ``out``."""
    from ..timing import load as load_mod
    out = out or sys.stderr
    load = load_mod.detect_load()
    print(f"sparsekern.bench: {load.summary()}", file=out)
    if requested is not None:
        print(f"sparsekern.bench: {requested} threads (--threads)", file=out)
        return requested, load
    print(f"sparsekern.bench: {load.recommended_threads} threads (recommended by the load "
          f"detection; --threads overrides)", file=out)
    return load.recommended_threads, load


def _device_refused(device: str) -> bool:
    """True, after printing why, when a run on ``device`` cannot start: no CUDA device, or a
    bad SPARSEKERN_CPU_ISA/_SCATTER/_POOL (every CPU kernel call would raise its error:
    stop before any timing, not after)."""
    import torch

    from ..timing.machine import cpu_env_error
    if device == "cuda" and not torch.cuda.is_available():
        print("error: --device cuda but torch sees no CUDA device", file=sys.stderr)
        return True
    error = cpu_env_error() if device == "cpu" else None
    if error:
        print(f"error: {error}", file=sys.stderr)
    return bool(error)


def _contention_settings(args):
    """The ContentionSettings of the command line, or None after printing why not."""
    from . import contention
    try:
        cores = tuple(int(c) for c in args.busy_cores.split(",")) if args.busy_cores else ()
        return contention.ContentionSettings(busy_cores=cores, phases=args.phases,
                                             calls=args.calls, busy_nice=args.busy_nice,
                                             busy_pinned=not args.busy_unpinned,
                                             busy_kind=args.busy_kind)
    except ValueError as e:
        print(f"error: --contention: {e}", file=sys.stderr)
        return None


def _contention_doc(name: str, argv_used, started: float, threads: int, load) -> dict:
    """The contention document's header (the results go under "contention")."""
    from . import machine
    from ..timing.machine import extension_isa
    return {"schema": "sparsekern-contention/1", "name": name,
            "command": " ".join(["python -m sparsekern.bench"] +
                                [shlex.quote(a) for a in argv_used]),
            "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
            "threads": threads, "isa": extension_isa(),
            "git_commit": machine.versions().get("git_commit"),
            "load": load.to_dict(), "loadavg_before": _loadavg(), "dense_env": dense_env(),
            "machine": machine.facts("cpu")}


def _run_contention(doc: dict, cs, out: str, progress: bool) -> bool:
    """Fill doc["contention"]; True when a Ctrl-C ended it (the cases finished before it
    are kept, as the plain run keeps them; the busy processes end either way)."""
    from . import contention
    doc["contention"] = res = contention.new_result(cs)
    print(f"sparsekern.bench --contention: {doc['threads']} threads, busy CPU(s) "
          f"{res['busy_cores']}{'' if cs.busy_pinned else ' (unpinned)'}, nice "
          f"{cs.busy_nice} -> {out}/{doc['name']}.*", file=sys.stderr)
    try:
        contention.run_into(res, cs, progress=(lambda msg: print(f"  {msg}", file=sys.stderr))
                            if progress else None)
    except KeyboardInterrupt:
        doc["interrupted"] = True
        print("interrupted: writing what was measured", file=sys.stderr)
        return True
    return False


def _write_contention(doc: dict, out: str, name: str) -> None:
    """Print the warnings; write OUT/NAME.json and .md; print the tables."""
    from . import contention, report
    for w in doc.get("warnings", []):
        print(f"warning: {w}", file=sys.stderr)
    path = report.write_json(doc, os.path.join(out, f"{name}.json"))
    md = contention.markdown(doc)
    with open(os.path.join(out, f"{name}.md"), "w") as f:
        f.write(md)
    print(md)
    print(f"wrote {path}, {os.path.join(out, name + '.md')} in {doc['elapsed_s']:.0f} s",
          file=sys.stderr)


def contention_main(args, argv_used) -> int:
    """--contention: quiet vs loaded, JSON + Markdown (see sparsekern.bench.contention).
    Measures the load first, as the plain run does (before the busy processes exist, so it
    sees other processes only), and warns when the quiet phases were not quiet."""
    from . import contention, machine
    from ..timing import load as load_mod
    if _device_refused("cpu"):
        return 2
    cs = _contention_settings(args)
    if cs is None:
        return 2
    name = args.name or "cpu-contention"
    out = args.out or fresh_out_dir(name)
    threads = machine.usable_cpus() if args.threads is None else args.threads
    started = time.time()
    try:  # a Ctrl-C inside the cases is _run_contention's; one before them leaves nothing
        load = load_mod.detect_load()
        print(f"sparsekern.bench: {load.summary()}", file=sys.stderr)
        with machine.ThreadSetting(threads):
            doc = _contention_doc(name, argv_used, started, threads, load)
            interrupted = _run_contention(doc, cs, out, not args.no_progress)
    except KeyboardInterrupt:
        print("interrupted before the first case: nothing measured, nothing written",
              file=sys.stderr)
        return 130
    doc["loadavg_after"] = _loadavg()
    doc["elapsed_s"] = time.time() - started
    doc["warnings"] = contention.quiet_warnings(doc["contention"], load)
    _write_contention(doc, out, name)
    return 130 if interrupted else 0


def _loadavg():
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except (AttributeError, OSError):
        return None


def write_outputs(doc: dict, out: str, name: str, plots_wanted: bool = True) -> int:
    """Print the warnings; write OUT/NAME.json, .md (and PNGs); print the report. Returns 1
    when the document breaks the schema (the JSON is written first: no data is lost)."""
    from . import plots, report
    for w in doc.get("warnings", []):
        print(f"warning: {w}", file=sys.stderr)
    json_path = report.write_json(doc, os.path.join(out, f"{name}.json"))
    problems = report.document_problems(doc)
    if problems:
        print("error: the results break the schema:\n  " + "\n  ".join(problems[:20]),
              file=sys.stderr)
        return 1
    md = report.full_report(doc)
    with open(os.path.join(out, f"{name}.md"), "w") as f:
        f.write(md)
    pngs = []
    if plots_wanted and doc["cases"]:
        try:
            pngs = plots.plot_speedups(doc, out, name)
        except ImportError as e:  # matplotlib is optional on a bare GPU box
            print(f"plots skipped: {e}", file=sys.stderr)
    print(md)
    print(f"wrote {json_path}, {os.path.join(out, name + '.md')}"
          + (f", {len(pngs)} PNG" if pngs else "") + f" in {doc['elapsed_s']:.0f} s",
          file=sys.stderr)
    return 0


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.render:
        return render_checked(args.render, args.short)
    argv_used = sys.argv[1:] if argv is None else list(argv)
    if args.contention:
        return contention_main(args, argv_used)

    import torch

    from . import e2e, health, machine, report, runner, selftime, training
    from .timing import FULL_TIMER, QUICK_TIMER, CudaTimerSettings, TimerSettings

    if _device_refused(args.device):
        return 2
    layouts = _layouts(args.layout)
    dtype = getattr(torch, args.dtype or ("float16" if args.device == "cuda" else "float32"))
    mode = "quick" if args.quick else "full"
    plan = run_plan(args.quick, layouts, args.device, models=not args.no_models,  # checked
                    models_only=args.models_only, backward=args.backward)  # by parse_args
    todo = plan["cases"]
    timer = TimerSettings(**(QUICK_TIMER if args.quick else FULL_TIMER).to_dict())
    cuda_timer = CudaTimerSettings(min_time=0.05 if args.quick else 0.1)
    if args.min_time is not None:
        timer.min_time = cuda_timer.min_time = args.min_time
    name = args.name or default_name(args.device, args.quick, layouts)
    out = args.out or fresh_out_dir(name)
    started = time.time()
    n_threads, load = choose_threads(args.threads)

    with machine.ThreadSetting(n_threads) as threads:
        calibration = machine.calibrate(args.device)
        s = runner.RunSettings(device=args.device, dtype=dtype, timer=timer, cuda_timer=cuda_timer,
                               max_call_time=0.5 if args.quick else 2.0,
                               balance=calibration["balance_flop_per_byte"])
        doc = {"schema": report.SCHEMA, "name": name, "mode": mode, "device": args.device,
               "command": " ".join(["python -m sparsekern.bench"] +
                                   [shlex.quote(a) for a in argv_used]),
               "started": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started)),
               "elapsed_s": 0.0, "settings": dict(s.to_dict(), threads=threads.threads),
               "machine": machine.facts(args.device), "calibration": calibration,
               "load": load.to_dict(), "dense_env": dense_env(), "cases": [], "models": []}
        print(f"sparsekern.bench: {plan_summary(plan)} on {args.device} "
              f"({threads.threads} threads, {runner.dtype_name(dtype)}) -> {out}/{name}.*",
              file=sys.stderr)
        interrupted = False
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)
                runner.run_cases(todo, s, progress=not args.no_progress,
                                 on_result=doc["cases"].append)
                if args.device == "cuda":  # before the models: other teams wait for these
                    doc["selftime"] = selftime.collect("cuda")
                if plan["models"]:
                    doc["models"] = e2e.run_models(plan["models"], s, variants=plan["variants"],
                                                   progress=not args.no_progress)
                if plan["training"]:
                    doc["training"] = training.run(timer, variants=plan["training"],
                                                   progress=None if args.no_progress
                                                   else lambda m: print(m, file=sys.stderr))
        except KeyboardInterrupt:
            interrupted = True
            doc["interrupted"] = True
            print("interrupted: writing what was measured", file=sys.stderr)
    doc["elapsed_s"] = time.time() - started
    doc["warnings"] = health.warnings(doc, load)
    rc = write_outputs(doc, out, name, plots_wanted=not args.no_plots)
    return rc or (130 if interrupted else 0)


if __name__ == "__main__":
    reexec_without_blas_env(sys.argv[1:])
    sys.exit(main())
