"""The benchmark's command line rejects bad and conflicting options before any work, with an
argparse error naming the flags (exit status 2, no traceback), instead of a traceback after
the run, an empty report or a silently ignored option."""
import json
import os

import pytest

from sparsekern.bench import __main__ as cli


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
    (["--short"], "argument --short: only with --render JSON"),
    (["--models-only", "--no-models", "--quick"],
     "arguments --models-only and --no-models exclude each other"),
    (["--contention", "--models-only"],
     "argument --contention: runs its own fixed cases; --models-only is not used with it"),
    (["--contention", "--layout", "csc", "--quick"],
     "argument --contention: runs its own fixed cases; --layout, --quick are not used with it"),
    (["--contention", "--device", "cuda"], "argument --contention: CPU only, got --device cuda"),
    (["--contention", "--busy-cores", "0,x"],
     "argument --busy-cores: expected comma-separated CPU numbers, got '0,x'"),
    (["--contention", "--busy-nice", "20"],
     "argument --busy-nice: expected a niceness in 0 .. 19, got 20"),
    (["--contention", "--calls", "2"], "argument --calls: expected an integer >= 3, got 2"),
    (["--busy-cores", "0"], "argument --busy-cores: only with --contention"),
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
