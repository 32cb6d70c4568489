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

    def engine(name, batch):
        e = peers.Engine(name, "dense", batch, 16)
        e.call = lambda: log.append(("call", name)) or np.zeros(1)
        return e

    ds = peers.Engine("DeepSparse 1.8", "2:4", 1, 16)
    ds.call = ("deepsparse", FakeWorker(log), "k1")
    skipped = peers.Engine("gone", "dense", 1, 16, skipped="not installed")
    engines = [engine("a", 1), ds, skipped, engine("b", 32)]
    cfg = peers.PeerConfig(rounds=2, calls=4)
    peers.time_engines(engines, cfg, sleep=lambda s: log.append(("sleep", s)))

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
    assert [b[0][1] for b in blocks] == ["a", "k1", "b"] * 2
    a_calls = peers.WARM_CALLS + cfg.calls
    b_calls = peers.WARM_CALLS + max(2, cfg.calls // 2)  # the large shape: half the calls
    assert blocks[0] == [("call", "a")] * a_calls
    assert blocks[1] == [("deepsparse", "k1", cfg.calls, peers.WARM_CALLS)]
    assert blocks[2] == [("call", "b")] * b_calls
    # only the timed calls are kept
    assert len(engines[0].times_ms) == 2 * cfg.calls
    assert len(engines[3].times_ms) == 2 * max(2, cfg.calls // 2)
    assert len(ds.round_medians_ms) == 2 and ds.times_ms == [1.0] * (2 * cfg.calls)
    assert skipped.times_ms == []


def test_idle_pause_outlasts_the_spin_it_waits_for(peers):
    # ONNX Runtime's threads spun for 40-50 ms after a block (the constant's comment)
    assert peers.IDLE_S >= 0.1
    text = peers.render([], {"cpu": "x", "cpus": 2, "torch": "t", "load_average": (0, 0, 0)},
                        peers.PeerConfig())
    assert f"{peers.IDLE_S:g} s idle and {peers.WARM_CALLS} untimed calls" in text
