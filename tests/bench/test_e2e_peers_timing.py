"""bench/e2e_peers.py's timing order (fake engines and a fake sleep; nothing is timed for real):
every engine's block starts after IDLE_S seconds of idleness, then WARM_CALLS untimed calls."""
import importlib.util
import os
import sys
from pathlib import Path

import numpy as np
import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "bench" / "e2e_peers.py"


@pytest.fixture(scope="module")
def peers():
    # As the re-executed child: importing must not exec a new interpreter.
    old = os.environ.get("_SK_PEERS_CHILD")
    os.environ["_SK_PEERS_CHILD"] = "1"
    try:
        spec = importlib.util.spec_from_file_location("e2e_peers_under_test", SCRIPT)
        mod = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = mod  # dataclasses look their module up there
        spec.loader.exec_module(mod)
    finally:
        if old is None:
            os.environ.pop("_SK_PEERS_CHILD", None)
        else:
            os.environ["_SK_PEERS_CHILD"] = old
    return mod


class FakeWorker:
    """Stands in for the DeepSparse worker: records each timing request."""

    def __init__(self, log):
        self.log = log

    def ask(self, **req):
        self.log.append(("deepsparse", req["key"], req["calls"], req["warm"]))
        return {"ok": True, "times_s": [0.001] * req["calls"]}


def test_every_block_starts_idle_then_warms(peers):
    log = []
    now = [0.0]

    def clock():  # a fake clock: each reading is logged, each timed span is 1 ms
        log.append(("clock",))
        now[0] += 0.0005
        return now[0]

    def engine(name, batch):
        e = peers.Engine(name, "dense", batch, 16)
        e.call = lambda: log.append(("call", name)) or np.zeros(1)
        return e

    ds = peers.Engine("DeepSparse 1.8", "2:4", 1, 16)
    ds.call = ("deepsparse", FakeWorker(log), "k1")
    skipped = peers.Engine("gone", "dense", 1, 16, skipped="not installed")
    engines = [engine("a", 1), ds, skipped, engine("b", 32)]
    cfg = peers.PeerConfig(rounds=2, calls=4)
    peers.time_engines(engines, cfg, sleep=lambda s: log.append(("sleep", s)), clock=clock)

    blocks, i = [], 0
    while i < len(log):
        assert log[i] == ("sleep", peers.IDLE_S), log[i:i + 3]
        j = i + 1
        while j < len(log) and log[j][0] != "sleep":
            j += 1
        blocks.append(log[i + 1:j])
        i = j
    # 3 live engines x 2 rounds, in order; the skipped one never runs
    assert len(blocks) == 6
    assert [next(e[1] for e in b if e[0] != "clock") for b in blocks] == ["a", "k1", "b"] * 2

    def expected(name, timed):  # the untimed calls first, then each timed call between readings
        return [("call", name)] * peers.WARM_CALLS + [("clock",), ("call", name), ("clock",)] * timed

    a_timed, b_timed = cfg.calls, max(2, cfg.calls // 2)  # the large shape: half the calls
    assert blocks[0] == blocks[3] == expected("a", a_timed)
    assert blocks[1] == blocks[4] == [("deepsparse", "k1", cfg.calls, peers.WARM_CALLS)]
    assert blocks[2] == blocks[5] == expected("b", b_timed)
    # only the timed calls are kept, each its clock span
    assert engines[0].times_ms == pytest.approx([0.5] * (2 * a_timed))
    assert engines[3].times_ms == pytest.approx([0.5] * (2 * b_timed))
    assert len(ds.round_medians_ms) == 2 and ds.times_ms == [1.0] * (2 * cfg.calls)
    assert skipped.times_ms == []


def test_idle_pause_outlasts_the_spin_it_waits_for(peers):
    # ONNX Runtime's threads spun for 40-50 ms after a block (the constant's comment)
    assert peers.IDLE_S >= 0.1
    text = peers.render([], {"cpu": "x", "cpus": 2, "torch": "t", "load_average": (0, 0, 0)},
                        peers.PeerConfig())
    assert f"{peers.IDLE_S:g} s idle and {peers.WARM_CALLS} untimed calls" in text


@pytest.mark.parametrize("args, flag, got", [
    (["--threads", "0"], "--threads", "0"),
    (["--threads", "-2"], "--threads", "-2"),
    (["--rounds", "0"], "--rounds", "0"),
    (["--calls", "-1"], "--calls", "-1"),
    (["--calls", "two"], "--calls", "'two'"),
])
def test_bad_counts_are_refused_before_anything_runs(peers, monkeypatch, capsys, args, flag, got):
    monkeypatch.setattr(peers, "build_engines", _must_not_build)
    with pytest.raises(SystemExit) as e:
        peers.main(args)
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert f"argument {flag}: expected an integer >= 1, got {got}" in err


def test_an_out_that_is_a_file_is_refused_before_anything_runs(peers, monkeypatch, capsys,
                                                               tmp_path):
    monkeypatch.setattr(peers, "build_engines", _must_not_build)
    f = tmp_path / "report.txt"
    f.write_text("x")
    with pytest.raises(SystemExit) as e:
        peers.main(["--out", str(f)])
    assert e.value.code == 2
    assert f"argument --out: {str(f)!r} exists and is not a folder" in capsys.readouterr().err
    # a folder under a file cannot be created either
    with pytest.raises(SystemExit):
        peers.main(["--out", str(f / "sub")])
    assert "argument --out: cannot create the folder" in capsys.readouterr().err


def test_default_out_is_not_the_committed_results(peers):
    assert not str(peers.PeerConfig().out).startswith("bench")


def _must_not_build(*a, **k):
    raise AssertionError("engines were built before the arguments were checked")


def test_worker_runs_the_untimed_calls_before_the_timed_ones(tmp_path):
    """bench/peers_worker.py with a stub `deepsparse` (the real one lives in its own venv):
    a "time" request runs `warm` untimed calls, then `calls` timed ones."""
    import json
    import subprocess
    stub = tmp_path / "deepsparse"
    stub.mkdir()
    (stub / "__init__.py").write_text(
        "import numpy as np\n"
        "class _Engine:\n"
        "    def __init__(self): self.runs = 0\n"
        "    def run(self, x):\n"
        "        self.runs += 1\n"
        "        return [np.array([[float(self.runs)]])]\n"
        "def compile_model(path, batch_size, num_cores, input_shapes):\n"
        "    return _Engine()\n")
    worker = Path(__file__).resolve().parents[2] / "bench" / "peers_worker.py"
    reqs = [{"op": "compile", "key": "k", "onnx": "m.onnx", "batch": 1, "tokens": 4,
             "threads": 1},
            {"op": "time", "key": "k", "calls": 3, "warm": 2},
            {"op": "run", "key": "k"},
            {"op": "nope"},
            {"op": "quit"}]
    env = dict(os.environ, PYTHONPATH=str(tmp_path))
    out = subprocess.run([sys.executable, str(worker)], input="".join(json.dumps(r) + "\n"
                                                                     for r in reqs),
                         capture_output=True, text=True, env=env, timeout=60)
    answers = [json.loads(line) for line in out.stdout.splitlines()]
    assert answers[0] == {"ok": True}
    assert answers[1]["ok"] and len(answers[1]["times_s"]) == 3
    assert answers[2] == {"ok": True, "out": [[6.0]]}  # 2 untimed + 3 timed runs came first
    assert answers[3]["ok"] is False and "unknown op 'nope'" in answers[3]["error"]


class _Stop(Exception):
    pass


def test_freezing_is_opt_in_and_reaches_inductor(peers, monkeypatch, tmp_path):
    import torch._inductor.config as inductor_config
    dynamo_config = peers.torch._dynamo.config
    seen = []

    def stop(cfg, work):
        seen.append((cfg.freezing, inductor_config.freezing))
        raise _Stop

    monkeypatch.setattr(peers, "build_engines", stop)
    monkeypatch.setattr(peers.torch, "set_num_threads", lambda n: None)
    # torch's config modules are restored by plain assignment (monkeypatch's undo removed
    # the attribute from them)
    freezing, limit = inductor_config.freezing, dynamo_config.recompile_limit
    try:
        inductor_config.freezing = False
        for args in ([], ["--freezing"]):
            with pytest.raises(_Stop):
                peers.main(args + ["--out", str(tmp_path)])
    finally:
        inductor_config.freezing, dynamo_config.recompile_limit = freezing, limit
    assert seen == [(False, False), (True, True)]
    text = peers.render([], {"cpu": "x", "cpus": 2, "torch": "t", "load_average": (0, 0, 0)},
                        peers.PeerConfig(freezing=True))
    assert ("dense torch.compile and AOTInductor engines with 'eager' attention, sparsekern "
            "engines with sparsekern's fused attention and inductor freezing." in text)
    text = peers.render([], {"cpu": "x", "cpus": 2, "torch": "t", "load_average": (0, 0, 0)},
                        peers.PeerConfig(sparse_attention="hf"))
    assert "sparsekern engines with Hugging Face's ('eager' compiled) attention." in text


def test_sparse_engines_run_fused_attention_by_default(peers, monkeypatch, tmp_path):
    seen = []

    def stop(cfg, work):
        seen.append(cfg.sparse_attention)
        raise _Stop

    monkeypatch.setattr(peers, "build_engines", stop)
    monkeypatch.setattr(peers.torch, "set_num_threads", lambda n: None)
    limit = peers.torch._dynamo.config.recompile_limit
    try:
        for args in ([], ["--sparse-attention", "hf"]):
            with pytest.raises(_Stop):
                peers.main(args + ["--out", str(tmp_path)])
    finally:
        peers.torch._dynamo.config.recompile_limit = limit
    assert seen == ["fused", "hf"]


def test_aoti_engines_run_by_default_and_no_aoti_skips_them_with_its_reason(peers, monkeypatch,
                                                                            tmp_path):
    seen = []

    def stop(cfg, work):
        seen.append(cfg.aoti)
        raise _Stop

    monkeypatch.setattr(peers, "build_engines", stop)
    monkeypatch.setattr(peers.torch, "set_num_threads", lambda n: None)
    limit = peers.torch._dynamo.config.recompile_limit
    try:
        for args in ([], ["--no-aoti"]):
            with pytest.raises(_Stop):
                peers.main(args + ["--out", str(tmp_path)])
    finally:
        peers.torch._dynamo.config.recompile_limit = limit
    assert seen == [True, False]
    off = peers.PeerConfig(aoti=False, compile=False)
    assert peers._skip_reason(off, "sparsekern 2:4 + AOTInductor") == "--no-aoti"
    assert peers._skip_reason(off, "torch AOTInductor") == "--no-aoti"
    assert peers._skip_reason(off, "torch.compile") == "--no-compile"
    assert peers._skip_reason(off, "ONNX Runtime") is None
    assert peers._skip_reason(peers.PeerConfig(), "torch AOTInductor") is None


def test_keep_freed_memory_is_opt_in_and_called_before_building(peers, monkeypatch, tmp_path,
                                                                  capsys):
    calls, seen = [], []

    def stop(cfg, work):
        seen.append((cfg.keep_freed_memory, list(calls)))
        raise _Stop

    monkeypatch.setattr(peers, "build_engines", stop)
    monkeypatch.setattr(peers.torch, "set_num_threads", lambda n: None)
    monkeypatch.setattr(peers.sk, "keep_freed_memory", lambda: calls.append(1) or True)
    limit = peers.torch._dynamo.config.recompile_limit
    try:
        for args in ([], ["--keep-freed-memory"]):
            with pytest.raises(_Stop):
                peers.main(args + ["--out", str(tmp_path)])
        monkeypatch.setattr(peers.sk, "keep_freed_memory", lambda: False)  # not glibc
        with pytest.raises(SystemExit):
            peers.main(["--keep-freed-memory", "--out", str(tmp_path)])
    finally:
        peers.torch._dynamo.config.recompile_limit = limit
    assert seen == [(False, []), (True, [1])]
    assert "argument --keep-freed-memory: the C library is not glibc" in capsys.readouterr().err
    text = peers.render([], {"cpu": "x", "cpus": 2, "torch": "t", "load_average": (0, 0, 0)},
                        peers.PeerConfig(keep_freed_memory=True))
    assert "sparsekern's fused attention; sparsekern.keep_freed_memory() first." in text
