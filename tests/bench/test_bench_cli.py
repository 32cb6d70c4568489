"""The benchmark's command line rejects bad and conflicting options before any work, with an
argparse error naming the flags (exit status 2, no traceback), instead of a traceback after
the run, an empty report or a silently ignored option."""
import json
import os

import pytest

from sparsekern.bench import __main__ as cli
from sparsekern.bench import cases as cases_mod


def _error(argv, capsys) -> str:
    with pytest.raises(SystemExit) as e:
        cli.main(argv)
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: python -m sparsekern.bench") and "Traceback" not in err, err
    last = err.strip().splitlines()[-1]
    assert last.startswith("python -m sparsekern.bench: error: argument"), last
    return last.split("error: ", 1)[1]


@pytest.fixture
def no_work(monkeypatch):
    """Fail the test if the run got past the argument checks."""
    monkeypatch.setattr(cli, "_device_refused", lambda device: pytest.fail("work started"))
    monkeypatch.setattr(cli, "contention_main", lambda *a: pytest.fail("work started"))
    monkeypatch.setattr(cli, "render", lambda *a: pytest.fail("rendered"))


@pytest.mark.parametrize("argv, message", [
    (["--threads", "-1"], "argument --threads: expected an integer >= 1, got -1"),
    (["--threads", "0"], "argument --threads: expected an integer >= 1, got 0"),
    (["--min-time", "-1"], "argument --min-time: expected a finite number > 0, got -1"),
    (["--min-time", "nan"], "argument --min-time: expected a finite number > 0, got 'nan'"),
    (["--short"], "argument --short: it is not used with the benchmark run on CPU; --short "
                  "applies to --render JSON (a short summary of a results file)"),
    (["--models-only", "--no-models", "--quick"],
     "arguments --models-only and --no-models exclude each other"),
    (["--contention", "--models-only"],
     "argument --models-only: it is not used with --contention (it times its own fixed "
     "cases); --models-only applies to the benchmark run"),
    (["--contention", "--layout", "csc", "--quick"],
     "argument --quick: it is not used with --contention (it times its own fixed cases); "
     "--quick applies to the benchmark run; also not used with it: --layout"),
    (["--contention", "--device", "cuda"], "argument --contention: CPU only, got --device cuda"),
    (["--contention", "--busy-cores", "0,x"],
     "argument --busy-cores: expected comma-separated CPU numbers, got '0,x'"),
    (["--contention", "--busy-nice", "20"],
     "argument --busy-nice: expected a niceness in 0 .. 19, got 20"),
    (["--contention", "--calls", "2"], "argument --calls: expected an integer >= 3, got 2"),
    (["--busy-cores", "0"], "argument --busy-cores: got '0', but it is not used with the "
                            "benchmark run on CPU; --busy-cores applies to --contention"),
    (["--layout", "nope"], "argument --layout: unknown layout 'nope'; expected one of 1:4, "
                           "2:4, bsr, bsr16x16, bsr32x32, bsr4x4, csc, csc-relu, sell"),
])
def test_bad_options_are_refused_before_any_work(argv, message, capsys, no_work):
    assert _error(argv, capsys).startswith(message)


def test_busy_cores_must_be_usable_cpus(capsys, no_work):
    # was accepted: the report then said the busy process was pinned to CPU 99
    usable = cli.usable_cpu_ids()
    missing = max(usable) + 1
    assert _error(["--contention", "--busy-cores", f"{usable[0]},{missing}"], capsys) == (
        f"argument --busy-cores: CPU(s) [{missing}] not usable here; expected CPUs among "
        f"{usable} (os.sched_getaffinity), got '{usable[0]},{missing}'")
    assert cli.parse_args(["--contention", "--busy-cores", str(usable[-1])]).busy_cores == \
        str(usable[-1])


def test_busy_cores_must_be_distinct(capsys, no_work, monkeypatch):
    # was accepted: two spinners on CPU 0, counted as 2 busy cores by the fair-share model
    monkeypatch.setattr(cli, "usable_cpu_ids", lambda: [0, 1])
    assert _error(["--contention", "--busy-cores", "0,1,0"], capsys) == (
        "argument --busy-cores: CPU(s) [0] given more than once; expected distinct CPUs (one "
        "busy process each), got '0,1,0'")
    assert cli.parse_args(["--contention", "--busy-cores", "1,0"]).busy_cores == "1,0"


def test_contention_threads_at_most_the_usable_cpus(capsys, no_work, monkeypatch):
    # was accepted: 16 threads on 2 CPUs, "fair share" 0.00x
    monkeypatch.setattr(cli, "usable_cpu_ids", lambda: [0, 1])
    assert _error(["--contention", "--threads", "16"], capsys) == (
        "argument --threads: got 16, but this process may use 2 CPUs [0, 1] "
        "(os.sched_getaffinity); expected 1 .. 2 with --contention")
    assert cli.parse_args(["--contention", "--threads", "2"]).threads == 2
    assert cli.parse_args(["--threads", "16", "--quick"]).threads == 16  # the plain run: as given


def test_out_is_checked_before_the_run(tmp_path, capsys, no_work):
    # was a FileExistsError after the whole run, its results lost
    afile = tmp_path / "afile"
    afile.write_text("")
    assert _error(["--quick", "--out", str(afile)], capsys) == (
        f"argument --out: {str(afile)!r} exists and is not a folder; expected a folder "
        f"(existing or new)")
    assert _error(["--contention", "--out", str(afile / "sub")], capsys).startswith(
        f"argument --out: cannot create the folder {str(afile / 'sub')!r}")
    assert cli.parse_args(["--out", str(tmp_path / "new" / "dir")]).out.endswith("dir")
    assert os.listdir(tmp_path) == ["afile"]  # the check leaves nothing behind


def test_render_errors_name_the_file(tmp_path, capsys):
    missing, notjson = tmp_path / "missing.json", tmp_path / "notjson.json"
    notjson.write_text("not json")
    assert _error(["--render", str(missing)], capsys) == (
        f"argument --render: cannot read {str(missing)!r}: No such file or directory")
    assert _error(["--render", str(notjson)], capsys) == (
        f"argument --render: {str(notjson)!r} is not a sparsekern.bench results file (JSON): "
        f"Expecting value: line 1 column 1 (char 0)")
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"hello": 1}))
    assert _error(["--render", str(other)], capsys).startswith(
        f"argument --render: {str(other)!r} is not a sparsekern.bench results file (JSON): "
        f"invalid results document")


def test_threads_given_are_used_as_given(monkeypatch, capsys):
    import sparsekern.timing.load as load
    from sparsekern.timing.load import judge
    monkeypatch.setattr(load, "detect_load", lambda: judge(2, 0.1, 0.0, 0.0))
    assert cli.parse_args([]).threads is None
    assert cli.choose_threads(1)[0] == 1 and "1 threads (--threads)" in capsys.readouterr().err


# --- every option has the modes it applies to; elsewhere it is refused (README: "Options
# that contradict each other or that the chosen mode ignores ... are refused") ------------

def test_every_option_has_a_row_in_the_mode_table():
    # a new option without a row fails here (and check_args raises), so none slips through
    p = cli.build_parser()
    flags = {a.option_strings[0] for a in p._actions if a.option_strings and a.dest != "help"}
    assert flags == set(cli.OPTION_MODES)
    assert all(set(modes) <= set(cli.MODES) and modes for modes, _ in cli.OPTION_MODES.values())


#: A value (or none, for a flag) for each option, to put it on a command line.
VALUE = {"--layout": "csc", "--device": "cpu", "--dtype": "float32", "--out": None,
         "--name": "x", "--threads": "1", "--busy-cores": "0", "--busy-nice": "0",
         "--busy-kind": "spin", "--phases": "2", "--calls": "20", "--min-time": "0.01",
         "--render": "r.json"}
#: A command line that selects each mode.
MODE_ARGV = {"render": ["--render", "r.json"], "contention": ["--contention"],
             "models": ["--models-only"], "cpu": [], "cuda": ["--device", "cuda"]}


def _option(flag, tmp_path):
    if flag == "--out":
        return [flag, str(tmp_path / "out")]
    return [flag] if flag not in VALUE else [flag, VALUE[flag]]


def _pairs(used: bool):
    return [(mode, flag) for mode in cli.MODES for flag, (modes, _) in cli.OPTION_MODES.items()
            if (mode in modes) == used and flag not in ("--render", "--contention",
                                                         "--models-only")
            and (mode, flag) != ("models", "--no-models")]  # a contradiction: its own message


@pytest.mark.parametrize("mode, flag", _pairs(used=False))
def test_an_option_the_mode_ignores_is_refused(mode, flag, capsys, no_work, tmp_path):
    # was: --phases/--calls/--busy-nice/--busy-kind without --contention, --render with run
    # options, --backward on cuda accepted and silently ignored (exit 0)
    argv = MODE_ARGV[mode] + _option(flag, tmp_path)
    if flag == "--device":  # the option that picks "cuda" is the mode itself there
        argv = MODE_ARGV[mode] + ["--device", "cpu"]
    got = cli.given_options(argv)
    assert flag in got
    modes, where = cli.OPTION_MODES[flag]
    message = _error(argv, capsys)
    assert message.startswith(f"argument {flag}: "), message
    assert f"it is not used with {cli.MODES[mode]}; {flag} applies to {where}" in message


@pytest.mark.parametrize("mode, flag", _pairs(used=True))
def test_an_option_the_mode_uses_is_accepted(mode, flag, tmp_path, monkeypatch):
    monkeypatch.setattr(cli, "usable_cpu_ids", lambda: [0, 1])
    argv = MODE_ARGV[mode] + _option(flag, tmp_path)
    if flag == "--device" and mode == "cuda":
        argv = MODE_ARGV[mode]
    if flag == "--device" and mode == "contention":
        argv = ["--contention", "--device", "cpu"]
    args = cli.parse_args(argv)
    assert cli.mode_of(args) == mode


@pytest.mark.parametrize("argv, message", [
    # the trial's reproducers (/tmp/trial1/bench_ignored.sh)
    (["--quick", "--layout", "sell", "--no-models", "--min-time", "0.01", "--phases", "5",
      "--calls", "9", "--busy-nice", "5", "--busy-kind", "torch"],
     "argument --busy-nice: got 5, but it is not used with the benchmark run on CPU; "
     "--busy-nice applies to --contention; also not used with it: --busy-kind, --phases, "
     "--calls"),
    (["--render", "r.json", "--quick", "--layout", "csc", "--threads", "3"],
     "argument --quick: it is not used with --render (it prints a results file and exits); "
     "--quick applies to the benchmark run; also not used with it: --layout, --threads"),
    (["--phases", "5"], "argument --phases: got 5, but it is not used with the benchmark run on "
                        "CPU; --phases applies to --contention"),
    (["--phase", "5"], "argument --phases: got 5"),  # an abbreviation is the same option
    (["--calls", "20"], "argument --calls: got 20, but it is not used"),  # the default, given
    (["--busy-kind", "torch", "--quick"], "argument --busy-kind: got 'torch', but it is not used"),
    (["--busy-unpinned"], "argument --busy-unpinned: it is not used with the benchmark run on "
                          "CPU; --busy-unpinned applies to --contention"),
    (["--render", "r.json", "--short", "--out", "/tmp/x"],
     "argument --out: got '/tmp/x', but it is not used with --render"),
    (["--device", "cuda", "--backward", "--quick"],
     "argument --backward: it is not used with the benchmark run on --device cuda; --backward "
     "applies to the benchmark run on CPU without --models-only (the training step is timed on "
     "CPU only)"),
    (["--models-only", "--backward"], "argument --backward: it is not used with --models-only "
                                      "(it times the end-to-end models only)"),
    (["--contention", "--no-plots"], "argument --no-plots: it is not used with --contention"),
    (["--contention", "--dtype", "float32"], "argument --dtype: got 'float32', but it is not "
                                             "used with --contention"),
    # --layout without a model variant (was: "0 cases, models ['minilm-l6']", models: [])
    (["--quick", "--models-only", "--layout", "sell"],
     "argument --layout: got 'sell', but no end-to-end model variant has layout 'sell'; with "
     "--models-only expected layouts among 2:4, bsr, csc (the model variants 2:4, "
     "bsr32x32-s90, csc-s90)"),
    (["--quick", "--models-only", "--layout", "csc,1:4"],
     "argument --layout: got 'csc,1:4', but no end-to-end model variant has layout '1:4'"),
    # --backward for layouts without a training-step variant (was: 2:4, bsr, csc timed)
    (["--quick", "--backward", "--layout", "sell"],
     "argument --backward: the training step has no variant for --layout 'sell'; expected a "
     "layout among 2:4, bsr, csc (the layouts with backward kernels of their own; 1:4 and "
     "sell run their backward on 2:4 and csc copies and are not in the training-step table)"),
    (["--backward", "--layout", "1:4"],
     "argument --backward: the training step has no variant for --layout '1:4'"),
])
def test_ignored_and_unserved_options_are_refused(argv, message, capsys, no_work):
    assert _error(argv, capsys).startswith(message)


ALL = object()


@pytest.mark.parametrize("argv, cases, models, variants, training", [
    (["--quick"], ALL, ["minilm-l6"], ["2:4", "bsr32x32-s90", "csc-s90"], []),
    (["--quick", "--backward"], ALL, ["minilm-l6"], ["2:4", "bsr32x32-s90", "csc-s90"],
     ["2:4", "bsr32x32", "csc"]),
    (["--quick", "--layout", "sell"], {"sell"}, [], [], []),  # was: models ['minilm-l6'] claimed
    (["--quick", "--layout", "1:4"], {"1:4"}, [], [], []),
    (["--quick", "--models-only", "--layout", "csc"], set(), ["minilm-l6"], ["csc-s90"], []),
    (["--quick", "--backward", "--layout", "sell,bsr32x32"], {"sell", "bsr32x32"}, ["minilm-l6"],
     ["bsr32x32-s90"], ["bsr32x32"]),                     # was: the training step timed all 3
    (["--layout", "csc-relu", "--no-models"], {"csc-relu"}, [], [], ["csc"]),
    (["--models-only"], set(), ["minilm-l6", "bert-base", "llama7b-mlp"],
     ["2:4", "bsr32x32-s90", "csc-s90"], []),             # was: the training step ran too
    (["--device", "cuda", "--layout", "2:4"], {"2:4"}, ["minilm-l6", "bert-base", "llama7b-mlp"],
     ["2:4"], []),
])
def test_the_run_plan_and_its_summary_say_what_runs(argv, cases, models, variants, training):
    args = cli.parse_args(argv)
    plan = cli.run_plan(args.quick, cli._layouts(args.layout), args.device,
                        models=not args.no_models, models_only=args.models_only,
                        backward=args.backward)
    if cases is ALL:
        assert len(plan["cases"]) == len(cases_mod.matrix("quick" if args.quick else "full"))
    else:
        assert {c.variant for c in plan["cases"]} == cases
    assert plan["models"] == models
    assert [v.name for v in plan["variants"]] == variants
    assert [v[0] for v in plan["training"]] == training
    line = cli.plan_summary(plan)
    assert line.startswith(f"{len(plan['cases'])} cases, ")
    assert (f"models {models} x variants {variants}" if models else "no models") in line
    assert (f"training step {training}" if training else "no training step") in line


@pytest.mark.parametrize("name", ["a/b", "../x", "/abs", "a\\b", ".hidden", "..", "",
                                  "a b", "a:b", "x*", "new\nline"])
def test_name_must_be_a_file_stem(name, capsys, no_work):
    # was: --name a/b wrote sparsekern-bench/a/b-<time>/a/b.json
    assert _error(["--quick", "--name", name], capsys) == (
        f"argument --name: expected a file name stem of letters, digits and . _ + - (not "
        f"starting with '.', no path separator), got {name!r}")


@pytest.mark.parametrize("name", ["cpu-full", "cpu-quick-2.4", "gpu_h200+triton", "A1"])
def test_file_stems_are_accepted(name):
    assert cli.parse_args(["--quick", "--name", name]).name == name
