"""Shared-machine defaults of the harness: fresh output folders, the BLAS environment of the
dense baseline, load-based threads, warnings, and the contention benchmark's logic (fake
clocks; the busy processes' lifecycle is checked, not their effect)."""
import json
import os

import pytest

from sparsekern.bench import __main__ as cli
from sparsekern.bench import contention, health
from sparsekern.timing.load import judge
from sparsekern.timing.timers import BlockSettings
from ..fake_clock import FakeClock as Clock


def test_quick_output_goes_to_a_fresh_folder_by_default(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert cli.parse_args(["--quick"]).out is None
    a = cli.fresh_out_dir("cpu-quick")
    assert a.startswith(os.path.join("sparsekern-bench", "cpu-quick-")) and not os.path.exists(a)
    os.makedirs(a)
    b = cli.fresh_out_dir("cpu-quick")
    assert b != a and not os.path.exists(b)
    assert "bench/results" not in a


def test_blas_env_is_removed_and_recorded():
    env = {"OPENBLAS_CORETYPE": "Haswell", "OPENBLAS_L2_SIZE": "1048576", "PATH": "/bin"}
    new = cli.blas_env_without(env)
    assert "OPENBLAS_CORETYPE" not in new and "OPENBLAS_L2_SIZE" not in new
    assert new["PATH"] == "/bin"
    assert json.loads(new[cli.UNSET_ENV_VAR]) == {"OPENBLAS_CORETYPE": "Haswell",
                                                 "OPENBLAS_L2_SIZE": "1048576"}
    assert new["OPENBLAS_THREAD_TIMEOUT"] == "4"  # OpenBLAS threads stop spinning soon
    assert cli.blas_env_without({"OPENBLAS_THREAD_TIMEOUT": "7"})["OPENBLAS_THREAD_TIMEOUT"] == "7"


def test_reexec_only_when_needed(monkeypatch):
    calls = []
    monkeypatch.setattr(os, "execve", lambda *a: calls.append(a))
    monkeypatch.delenv(cli.UNSET_ENV_VAR, raising=False)
    monkeypatch.setenv("OPENBLAS_CORETYPE", "Haswell")
    cli.reexec_without_blas_env(["--quick", "--keep-blas-env"])
    assert calls == []
    cli.reexec_without_blas_env(["--quick"])
    assert len(calls) == 1
    exe, args, env = calls[0]
    assert args[1:] == ["-m", "sparsekern.bench", "--quick"]
    assert "OPENBLAS_CORETYPE" not in env
    assert env["OPENBLAS_THREAD_TIMEOUT"] == "4"
    monkeypatch.setenv(cli.UNSET_ENV_VAR, "{}")                  # already re-executed
    cli.reexec_without_blas_env(["--quick"])
    assert len(calls) == 1
    monkeypatch.delenv(cli.UNSET_ENV_VAR)
    monkeypatch.delenv("OPENBLAS_CORETYPE")
    monkeypatch.delenv("OPENBLAS_L2_SIZE", raising=False)
    monkeypatch.delenv("OPENBLAS_THREAD_TIMEOUT", raising=False)
    cli.reexec_without_blas_env(["--quick"])                      # only the spin to set
    assert len(calls) == 2 and calls[1][2]["OPENBLAS_THREAD_TIMEOUT"] == "4"
    monkeypatch.setenv("OPENBLAS_THREAD_TIMEOUT", "4")
    cli.reexec_without_blas_env(["--quick"])                      # nothing would change
    assert len(calls) == 2


def test_dense_env_reports_what_was_unset(monkeypatch):
    monkeypatch.setenv(cli.UNSET_ENV_VAR, json.dumps({"OPENBLAS_CORETYPE": "Haswell"}))
    monkeypatch.delenv("OPENBLAS_CORETYPE", raising=False)
    d = cli.dense_env()
    assert d["unset_for_this_run"] == {"OPENBLAS_CORETYPE": "Haswell"}
    assert "OPENBLAS_CORETYPE" not in d["still_set"]
    assert all("architecture" in k for k in d["openblas"])


def test_threads_from_the_load_detection_unless_given(monkeypatch, capsys):
    import sparsekern.timing.load as load
    monkeypatch.setattr(load, "detect_load", lambda: judge(2, 2.5, 1.0, 0.0))
    n, rep = cli.choose_threads(None)
    assert n == 1 and rep.busy
    assert "recommended by the load detection; --threads overrides" in capsys.readouterr().err
    n, _ = cli.choose_threads(2)
    assert n == 2 and "2 threads (--threads)" in capsys.readouterr().err


def _doc(timing):
    return {"cases": [{"id": "csc-4096-N1", "candidates": {
        "sparsekern": {"status": "ok", "timing": timing},
        "numpy.matmul": {"status": "skipped", "timing": None}}}]}


def test_warnings_for_slices_spread_and_load():
    sliced = {"median_s": 12e-3, "q1_s": 12e-3, "q3_s": 12e-3, "min_s": 12e-3, "iqr_s": 0.0}
    w = health.warnings(_doc(sliced), judge(2, 3.0, 1.0, 0.0))
    assert len(w) == 2
    assert w[0].startswith("the machine was busy at the start (machine busy: 1.0 other")
    assert "1 timings are whole scheduler slices" in w[1] and "csc-4096-N1 sparsekern: 12 ms ±0%" in w[1]
    noisy = {"median_s": 1e-3, "q1_s": 0.6e-3, "q3_s": 1.5e-3, "min_s": 0.5e-3, "iqr_s": 0.9e-3}
    w = health.warnings(_doc(noisy), judge(2, 0.1, 0.0, 0.0))
    assert w == ["1 timings spread more than 30% (IQR/median): csc-4096-N1 sparsekern"]
    clean = {"median_s": 1e-3, "q1_s": 0.99e-3, "q3_s": 1.01e-3, "min_s": 0.98e-3, "iqr_s": 2e-5}
    assert health.warnings(_doc(clean), judge(2, 0.1, 0.0, 0.0)) == []


def test_warnings_for_model_rows_with_wide_spreads_or_impossible_speedups():
    """An end-to-end model row timed on a busy machine (a dense median of 96 ms with a
    minimum of 5 ms) is called noisy, and a speedup above its Amdahl bound (9.4x where the
    Linear layers are 3.6% of the dense model) is called what it is: the machine's load."""
    wide = {"median_s": 96e-3, "q1_s": 11e-3, "q3_s": 96e-3, "min_s": 4.9e-3, "iqr_s": 85e-3}
    tight = {"median_s": 10e-3, "q1_s": 9.9e-3, "q3_s": 10.1e-3, "min_s": 9.8e-3, "iqr_s": 2e-4}
    row = {"model": "minilm-l6", "variant": "2:4", "batch": 1, "status": "ok",
           "dense": wide, "sparse": tight, "speedup": 9.43, "amdahl_limit": 1.04}
    w = health.warnings({"models": [row]})
    assert w[0] == "1 timings spread more than 30% (IQR/median): minilm-l6 2:4 batch 1 dense"
    assert w[1] == ("1 model speedups exceed what their Linear layers allow (the speedup if "
                    "those layers took no time at all): their timings measure the machine's "
                    "load, not the model: minilm-l6 2:4 batch 1: 9.43x > 1.04x")
    ok = dict(row, dense=tight, speedup=1.03)
    assert health.warnings({"models": [ok, dict(ok, status="skipped", speedup=50.0)]}) == []
    assert health.warnings({"models": [dict(ok, speedup=1.12, amdahl_limit=1.04)]}) == []


# -- contention ---------------------------------------------------------------------------


def test_run_phase_times_each_candidate_in_a_warmed_block():
    c, order = Clock(), []

    def f(name, dt):
        def fn():
            order.append(name)
            c.t += dt
        return fn
    warm = BlockSettings(warm_calls=2, warm_time=0.0, max_warm_time=1.0)
    out = contention.run_phase({"a": f("a", 1e-3), "b": f("b", 2e-3)}, 3, clock=c, warm=warm)
    # each block: 2 untimed calls, then the 3 timed ones
    assert order == ["a"] * 5 + ["b"] * 5
    assert out["a"] == pytest.approx([1e-3] * 3) and out["b"] == pytest.approx([2e-3] * 3)
    order.clear()
    # the default warm-up: at least 12 calls and 5 ms
    contention.run_phase({"a": f("a", 1e-3)}, 3, clock=c)
    assert order == ["a"] * (12 + 3)


def test_summarize_case_ratios_and_targets():
    quiet = {"torch.F.linear": [2e-3] * 3, "numpy.matmul": [1e-3] * 3,
             "csc 90%": [0.2e-3] * 3, "2:4": [0.5e-3] * 3}
    loaded = {"torch.F.linear": [3e-3] * 3, "numpy.matmul": [2e-3, 2e-3, 9e-3],
              "csc 90%": [0.25e-3] * 3, "2:4": [4e-3] * 3}
    s = contention.summarize_case(quiet, loaded)
    assert s["best_dense_quiet"] == "numpy.matmul" and s["best_dense_loaded"] == "numpy.matmul"
    csc = s["candidates"]["csc 90%"]
    assert csc["loaded_over_quiet"] == pytest.approx(1.25)
    assert csc["over_dense_quiet"] == pytest.approx(0.2) and csc["targets_met"]
    two4 = s["candidates"]["2:4"]
    assert two4["loaded_over_quiet"] == pytest.approx(8.0) and not two4["targets_met"]
    assert two4["over_dense_loaded"] == pytest.approx(2.0)   # slower than dense under load
    assert s["candidates"]["numpy.matmul"]["loaded_max_s"] == 9e-3
    assert "targets_met" not in s["candidates"]["torch.F.linear"]


def test_contention_settings_rejections():
    with pytest.raises(ValueError, match="needs phases >= 1 and calls >= 3, got phases=0"):
        contention.ContentionSettings(phases=0)


def test_busy_processes_start_pause_and_always_end():
    with contention.BusyProcesses([0]) as busy:
        assert all(p.is_alive() for p in busy.procs)
        busy.resume()
        busy.pause()
    assert not any(p.is_alive() for p in busy.procs)


def test_contention_run_and_markdown_on_tiny_shapes(monkeypatch):
    s = contention.ContentionSettings(busy_cores=(0,), phases=1, calls=3, settle_s=0.0,
                                      shapes=(("64²", 64, 64),), batches=(1,))
    res = contention.run(s)
    assert res["busy_cores"] == [0] and len(res["cases"]) == 1
    rows = res["cases"][0]["candidates"]
    assert set(rows) == {"torch.F.linear", "numpy.matmul", "2:4", "bsr32x32 90%", "csc 90%"}
    assert all(r["calls"] == 3 for r in rows.values())
    assert all(r["single_thread_median_s"] > 0 and "fair_share_ratio" in r for r in rows.values())
    md = contention.markdown({"threads": 2, "isa": "avx2", "contention": res})
    assert "| 64² | 1 | csc 90% |" in md


# -- forward + backward --------------------------------------------------------------------

def test_training_case_times_both_and_reports_the_isa():
    from sparsekern.bench import training
    from sparsekern.timing.timers import TimerSettings
    t = TimerSettings(min_time=0.0, min_reps=2, max_reps=2, warmup_time=0.0,
                      max_warmup_calls=1, sample_time=0.0)
    recs = training.run(t, shapes=(("tiny", 48, 32, 8),))
    assert [r["variant"] for r in recs] == ["2:4", "bsr32x32", "csc"]
    for r in recs:
        assert r["status"] == "ok" and r["dense"]["reps"] == 2 and r["sparse"]["reps"] == 2
        assert r["speedup"] == r["dense"]["median_s"] / r["sparse"]["median_s"]
    md = training.markdown(recs)
    assert md.count("| tiny 48×32 | 8 |") == 3


def test_training_step_gives_the_dense_gradients():
    import torch
    import sparsekern as sk
    from sparsekern.bench import training
    gen = torch.Generator().manual_seed(1)
    dense = training._pruned(16, 12, "csc", None, 0.5, gen)
    sparse = sk.SparseLinear.from_dense(dense, "csc")
    g = torch.randn(5, 16, generator=gen)
    x1 = torch.randn(5, 12, generator=gen).requires_grad_(True)
    x2 = x1.detach().clone().requires_grad_(True)
    mask = dense.weight.detach() != 0
    training.step_fn(dense, g, lr=0.1)(x1)
    training.step_fn(sparse, g, lr=0.1)(x2)
    torch.testing.assert_close(x2.grad, x1.grad, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(sparse.bias.grad, dense.bias.grad, rtol=1e-5, atol=1e-5)
    # The SGD step moved both layers alike at the stored entries (the step changes the
    # weight every call, as training does); the sparse layer keeps its pattern.
    moved = sparse.weight.to_dense()
    assert not torch.equal(moved[mask], training._pruned(16, 12, "csc", None, 0.5,
                           torch.Generator().manual_seed(1)).weight.detach()[mask])
    torch.testing.assert_close(moved[mask], dense.weight.detach()[mask], rtol=1e-5, atol=1e-5)
    assert torch.equal(moved != 0, mask)
    torch.testing.assert_close(sparse.bias.detach(), dense.bias.detach(), rtol=1e-5, atol=1e-5)


def test_training_failure_is_a_record_not_a_crash(monkeypatch):
    from sparsekern.bench import training
    from sparsekern.timing.timers import TimerSettings

    def boom(layer, g, lr=1e-4):
        def fn(x):
            raise RuntimeError("no backward here\nmore")
        return fn
    monkeypatch.setattr(training, "step_fn", boom)
    r = training.run_case("t", 8, 8, 2, training.VARIANTS[2], TimerSettings())
    assert r["status"] == "failed" and r["reason"] == "dense: RuntimeError: no backward here"
    assert "failed: dense: RuntimeError" in training.markdown([r])


def test_a_genuine_one_slice_timing_is_not_called_a_stall():
    """4.01 ms is one scheduler slice; a 4096 x 4096 x 64 dense GEMM genuinely takes about that
    (its floor: 2.1 GFLOP at 1 TFLOP/s on 2 threads, 2.1 ms), while a MiniLM-sized GEMV
    (1536 x 384, N=1; floor about a microsecond) that takes 12 ms waited for a core."""
    t = {"median_s": 4.01e-3, "q1_s": 3.99e-3, "q3_s": 4.03e-3, "min_s": 3.98e-3, "iqr_s": 4e-5}
    big = {"id": "csc-4096-N64", "M": 4096, "K": 4096, "N": 64, "stored": 4096 * 410,
           "bytes": {"dense": 4096 * 4096 * 4, "sparse": 4096 * 410 * 6},
           "candidates": {"torch.matmul": {"kind": "dense", "status": "ok", "timing": t}}}
    doc = {"settings": {"threads": 2}, "cases": [big]}
    assert health.warnings(doc) == []
    sliced = {"median_s": 12e-3, "q1_s": 12e-3, "q3_s": 12e-3, "min_s": 12e-3, "iqr_s": 0.0}
    small = {"id": "csc-1536x384-N1", "M": 1536, "K": 384, "N": 1, "stored": 58982,
             "bytes": {"dense": 1536 * 384 * 4, "sparse": 58982 * 6},
             "candidates": {"sparsekern": {"kind": "sparsekern", "status": "ok",
                                           "timing": sliced}}}
    w = health.warnings({"settings": {"threads": 2}, "cases": [small]})
    assert w == ["1 timings are whole scheduler slices (a thread waited for a core; the figure "
                 "measures the machine's load, not the kernel): csc-1536x384-N1 sparsekern: "
                 "12 ms ±0%"]
    # the floor is the candidate's own: the same 4.01 ms on the sparse kernel of the big case
    # (about 0.2 GFLOP stored) is 20x its floor
    big["candidates"]["sparsekern"] = {"kind": "sparsekern", "status": "ok", "timing": t}
    assert "csc-4096-N64 sparsekern: 4.01 ms" in health.warnings(doc)[0]
    assert health.floor_s({"M": 1}, {"kind": "dense"}, 2) is None


def test_busy_processes_can_be_niced_and_unpinned():
    import os
    import time
    with contention.BusyProcesses([0], nice=19, pinned=False) as busy:
        busy.resume()
        time.sleep(0.3)  # the child sets its niceness as it starts
        pid = busy.procs[0].pid
        assert os.getpriority(os.PRIO_PROCESS, pid) == 19
        assert os.sched_getaffinity(pid) == os.sched_getaffinity(0)  # not pinned
    assert not busy.procs[0].is_alive()


def test_contention_settings_reject_a_bad_niceness():
    with pytest.raises(ValueError, match=r"needs 0 <= busy_nice <= 19, got busy_nice=20"):
        contention.ContentionSettings(busy_nice=20)


def test_the_markdown_says_how_the_busy_processes_ran():
    doc = {"contention": {"busy_cores": [1, 1], "cases": [],
                          "settings": {"busy_nice": 19, "busy_pinned": False}}}
    assert "busy processes 2 unpinned, nice 19;" in contention.markdown(doc)
    doc["contention"]["settings"] = {"busy_nice": 0, "busy_pinned": True}
    assert "busy processes pinned to CPU(s) [1, 1];" in contention.markdown(doc)


def test_a_torch_busy_process_runs_two_threads_niced():
    import os
    import time
    with contention.BusyProcesses([0], nice=19, pinned=False, kind="torch") as busy:
        busy.resume()
        pid = busy.procs[0].pid
        for _ in range(100):  # a spawned child imports torch first
            time.sleep(0.1)
            try:
                threads = len(os.listdir(f"/proc/{pid}/task"))
            except FileNotFoundError:
                threads = 0
            if threads >= 2 and os.getpriority(os.PRIO_PROCESS, pid) == 19:
                break
        assert os.getpriority(os.PRIO_PROCESS, pid) == 19 and threads >= 2
    assert not busy.procs[0].is_alive()
    with pytest.raises(ValueError, match=r"busy_kind must be one of \('spin', 'torch'\), got 'x'"):
        contention.ContentionSettings(busy_kind="x")


def test_fair_share_ratio_is_what_a_balanced_call_could_reach():
    # 2 threads on 2 CPUs, one core shared half and half: 1.5 cores at the one-thread speed.
    assert contention.fair_share_ratio(2e-3, 1e-3, 2, 1, cpus=2) == pytest.approx(4 / 3)
    # a memory-bound call whose 2 quiet threads run 2.7x one: the target is out of reach
    assert contention.fair_share_ratio(2.7e-3, 1e-3, 2, 1, cpus=2) == pytest.approx(1.8)
    assert contention.fair_share_ratio(1e-3, 1e-3, 1, 0, cpus=2) == pytest.approx(1.0)
    assert contention.fair_share_ratio(1e-3, 0.0, 2, 1, cpus=2) is None


# (T threads, B busy cores, C CPUs) -> fair share, for a call whose T quiet threads run T
# times one thread (single = T x quiet): 1.0 when T + B <= C (nothing shared), else
# single / ((T + C - B) / 2) / quiet.
FAIR = {(1, 0, 2): 1.0, (1, 1, 2): 1.0, (1, 2, 2): 2.0,     # 1 thread on the free CPU
        (2, 0, 2): 1.0, (2, 1, 2): 4 / 3, (2, 2, 2): 2.0,
        (1, 0, 4): 1.0, (1, 1, 4): 1.0, (1, 2, 4): 1.0,
        (2, 0, 4): 1.0, (2, 1, 4): 1.0, (2, 2, 4): 1.0}


@pytest.mark.parametrize("T, B, C", sorted(FAIR))
def test_fair_share_counts_the_usable_cpus(T, B, C):
    # was 2.0 for --threads 1 with one busy core on 2 CPUs: the thread runs on the free CPU
    assert contention.fair_share_ratio(T * 1e-3, 1e-3, T, B, cpus=C) == pytest.approx(FAIR[T, B, C])


def test_fair_share_edges():
    # more threads than CPUs: no model (was 0.00x for --threads 16 on 2 CPUs)
    assert contention.fair_share_ratio(1e-3, 1e-3, 16, 1, cpus=2) is None
    # threads that scale sublinearly (2 threads 1.2x one) lose little: never below 1.0
    assert contention.fair_share_ratio(1.2e-3, 1e-3, 2, 1, cpus=2) == 1.0
    # busy processes beyond our CPUs take no more than all of them
    assert contention.fair_share_ratio(1e-3, 1e-3, 1, 5, cpus=2) == pytest.approx(2.0)
    assert contention.busy_count([0, 1, 7], pinned=True, usable=[0, 1, 2, 3]) == 2
    assert contention.busy_count([7], pinned=True, usable=[0, 1]) == 0  # pinned elsewhere
    assert contention.busy_count([7, 8, 9], pinned=False, usable=[0, 1]) == 2


def test_one_thread_misses_are_not_called_out_of_reach():
    # the trial's --threads 1 run: loaded/quiet ~1x, fair share was ~2x ("out of reach")
    quiet = {"numpy.matmul": [1e-3] * 3, "2:4": [1e-3] * 3}
    loaded = {"numpy.matmul": [1e-3] * 3, "2:4": [1.6e-3] * 3}
    s = contention.summarize_case(quiet, loaded, quiet, threads=1, busy=1, cpus=2)
    assert s["candidates"]["2:4"]["fair_share_ratio"] == 1.0
    md = contention.markdown({"contention": {"busy_cores": [1], "cases": [
        dict(s, shape="2048²", N=1)]}})
    assert "| 2:4 |" in md and "**missed** |" in md and "out of reach" not in md


def test_busy_cores_must_be_distinct_in_the_settings():
    with pytest.raises(ValueError, match=r"busy_cores must be distinct CPUs \(one busy process "
                                         r"per CPU\), got \(0, 0\)"):
        contention.ContentionSettings(busy_cores=(0, 0))


# -- the quiet phases: were they quiet? (injected rows and load reports) ---------------------

def _row(samples, single=None):
    r = {"quiet_median_s": sorted(samples)[len(samples) // 2],
         "quiet_timing": contention.quartiles(samples)}
    if single is not None:
        r["single_thread_median_s"] = single
    return r


def _res(rows, threads=2, M=2048, N=1):
    return {"fair_share_model": {"threads": threads, "cpus": 2, "busy": 1},
            "cases": [{"shape": f"{M}²", "M": M, "K": M, "N": N, "candidates": rows}]}


def test_quiet_phases_that_were_quiet_give_no_warning():
    rows = {"torch.F.linear": _row([0.6e-3, 0.61e-3, 0.62e-3], single=0.9e-3)}
    assert contention.quiet_warnings(_res(rows), judge(2, 0.1, 0.0, 0.0)) == []


def test_a_busy_machine_before_the_run_is_a_warning():
    w = contention.quiet_warnings(_res({}), judge(2, 2.3, 1.0, 0.0))
    assert len(w) == 1 and w[0].startswith(
        "the machine was busy before the run (machine busy: 1.0 other runnable threads")
    assert "the quiet phases were not quiet" in w[0]


def test_quiet_samples_are_judged_as_the_plain_run_judges_its_own():
    rows = {"torch.F.linear": _row([6.3e-3, 6.32e-3, 6.4e-3], single=0.608e-3),  # the trial's
            "csc 90%": _row([0.1e-3, 0.2e-3, 0.3e-3]),                           # spread wide
            "numpy.matmul": _row([12e-3, 12e-3, 12e-3, 12e-3])}                  # 3 slices
    w = contention.quiet_warnings(_res(rows))
    assert w == [
        "1 quiet timings spread more than 30% (IQR/median): 2048² N=1 csc 90% 0.2 ms; the "
        "quiet phases were not quiet",
        "1 quiet timings are whole scheduler slices (a thread waited for a core): 2048² N=1 "
        "numpy.matmul 12 ms; the quiet phases were not quiet",
        "1 quiet timings on 2 threads are over 1.5x the one-thread median (a thread waited for "
        "a core): 2048² N=1 torch.F.linear 6.32 ms (1 thread 0.608 ms); the quiet phases were "
        "not quiet"]
    # one thread: quiet and one-thread runs are alike, nothing to compare
    assert not any("one-thread" in x for x in contention.quiet_warnings(_res(rows, threads=1)))


def test_a_genuine_one_slice_quiet_call_is_not_a_stall():
    # 4096² x 64 dense takes about a slice for real (health.quantized's floor guard)
    rows = {"torch.F.linear": _row([4.0e-3, 4.01e-3, 4.02e-3])}
    assert contention.quiet_warnings(_res(rows, M=4096, N=64)) == []


def test_the_markdown_lists_the_load_and_the_warnings():
    doc = {"load": judge(2, 2.3, 1.0, 0.0).to_dict(), "warnings": ["w1", "w2"],
           "contention": {"busy_cores": [1], "cases": [],
                          "fair_share_model": {"threads": 1, "cpus": 2, "busy": 1}}}
    md = contention.markdown(doc)
    assert "machine busy before the run (1.0 other runnable threads); load average" in md
    assert "**Warnings:**\n\n- w1\n- w2\n" in md
    assert "(here 1 thread on 2 CPUs, 1 busy)" in md
    assert "Interrupted" not in md
    assert "**Interrupted** (Ctrl-C)" in contention.markdown(dict(doc, interrupted=True))


# -- contention_main with injected load, settings and phases (no real timing) -------------

class _Phases:
    """run_phase's stand-in: fixed samples per call, a KeyboardInterrupt at call ``stop``."""

    def __init__(self, samples, stop=None):
        self.samples, self.stop, self.calls = samples, stop, 0

    def __call__(self, fns, calls, clock=None):
        self.calls += 1
        if self.calls == self.stop:
            raise KeyboardInterrupt
        return {n: [self.samples.get(n, 1e-3)] * calls for n in fns}


@pytest.fixture
def tiny_contention(monkeypatch):
    """contention_main on two tiny cases, fake candidates, a busy load report, and the
    BusyProcesses it started (real ones, on CPU 0)."""
    import sparsekern.timing.load as load_mod
    started = []

    class Recorded(contention.BusyProcesses):
        def __enter__(self):
            started.append(self)
            return super().__enter__()
    names = contention.DENSE + tuple(n for n, *_ in contention.LAYOUTS)
    monkeypatch.setattr(contention, "candidates",
                        lambda M, K, N, seed: ({n: (lambda: None) for n in names}, None))
    monkeypatch.setattr(contention, "BusyProcesses", Recorded)
    monkeypatch.setattr(load_mod, "detect_load", lambda: judge(2, 2.3, 1.0, 0.0))
    monkeypatch.setattr(cli, "_contention_settings", lambda args: contention.ContentionSettings(
        busy_cores=(0,), phases=1, calls=3, settle_s=0.0, shapes=(("64²", 64, 64),),
        batches=(1, 2)))
    return started


def _contention_doc(out):
    with open(out / "cpu-contention.json") as f:
        doc = json.load(f)
    return doc, (out / "cpu-contention.md").read_text()


def test_contention_measures_the_load_first_and_warns(tmp_path, monkeypatch, capsys,
                                                      tiny_contention):
    # was: an outside spinner made "quiet" 10x slower than one thread, and nothing said so
    monkeypatch.setattr(contention, "run_phase", _Phases({"torch.F.linear": 6e-3}))
    out = tmp_path / "out"
    assert cli.main(["--contention", "--threads", "2", "--out", str(out), "--no-progress"]) == 0
    err = capsys.readouterr().err
    assert "sparsekern.bench: machine busy: 1.0 other runnable threads" in err
    assert "warning: the machine was busy before the run" in err
    doc, md = _contention_doc(out)
    assert doc["load"]["busy"] and doc["load"]["others"] == 1.0
    assert doc["warnings"][0].startswith("the machine was busy before the run")
    assert "**Warnings:**" in md and "interrupted" not in doc
    assert doc["contention"]["fair_share_model"]["threads"] == 2
    assert len(doc["contention"]["cases"]) == 2


def test_ctrl_c_writes_what_was_measured_and_ends_the_busy_processes(tmp_path, monkeypatch,
                                                                     capsys, tiny_contention):
    # was: a KeyboardInterrupt traceback and no file; the second case's 6th phase call is
    # interrupted (per case: a warm-up call, then quiet, single and loaded)
    monkeypatch.setattr(contention, "run_phase", _Phases({}, stop=6))
    out = tmp_path / "out"
    assert cli.main(["--contention", "--out", str(out), "--no-progress"]) == 130
    err = capsys.readouterr().err
    assert "interrupted: writing what was measured" in err and "Traceback" not in err
    doc, md = _contention_doc(out)
    assert doc["interrupted"] is True and [c["N"] for c in doc["contention"]["cases"]] == [1]
    assert "**Interrupted** (Ctrl-C)" in md and "| 64² | 1 | csc 90% |" in md
    (busy,) = tiny_contention
    assert busy.procs and not any(p.is_alive() for p in busy.procs)


def test_busy_processes_ignore_the_terminal_ctrl_c():
    # Ctrl-C reaches the whole process group: a busy process printed its own traceback
    import signal
    import time
    with contention.BusyProcesses([0]) as busy:
        busy.resume()
        time.sleep(0.2)  # the child sets SIG_IGN as it starts
        os.kill(busy.procs[0].pid, signal.SIGINT)
        time.sleep(0.2)
        assert busy.procs[0].is_alive()
    assert not busy.procs[0].is_alive()


def test_summarize_case_with_one_thread_times_and_the_markdown_says_out_of_reach():
    quiet = {"numpy.matmul": [1e-3] * 3, "2:4": [0.5e-3] * 3, "csc 90%": [0.2e-3] * 3}
    loaded = {"numpy.matmul": [2e-3] * 3, "2:4": [1e-3] * 3, "csc 90%": [0.4e-3] * 3}
    single = {"numpy.matmul": [2e-3] * 3, "2:4": [1.5e-3] * 3, "csc 90%": [0.3e-3] * 3}
    s = contention.summarize_case(quiet, loaded, single, threads=2, busy=1, cpus=2)
    two4, csc = s["candidates"]["2:4"], s["candidates"]["csc 90%"]
    assert two4["single_thread_median_s"] == pytest.approx(1.5e-3)
    assert two4["fair_share_ratio"] == pytest.approx(2.0) and not two4["targets_met"]
    assert csc["fair_share_ratio"] == pytest.approx(1.0) and not csc["targets_met"]
    md = contention.markdown({"threads": 2, "isa": "avx512", "contention": {
        "busy_cores": [1], "settings": {}, "cases": [dict(s, shape="4096²", N=1)]}})
    assert "| 4096² | 1 | 2:4 | 0.5 | 0.5 | 1.5 | 1 | 1 | 2.00x | 2.00x |" in md
    assert "**missed** (out of reach)" in md.split("| 2:4 |")[1].splitlines()[0]
    assert "(out of reach)" not in md.split("| csc 90% |")[1].splitlines()[0]


def test_busy_process_dies_with_a_killed_bench():
    """`kill <bench pid>` skips the bench's context managers; the pinned spinner used to be
    left burning a core, adopted by init. It now asks the kernel for SIGKILL when its parent
    dies (Linux)."""
    import signal
    import subprocess
    import sys
    import textwrap
    import time
    if not sys.platform.startswith("linux"):
        pytest.skip("PR_SET_PDEATHSIG is Linux's")
    code = textwrap.dedent("""
        import time
        from sparsekern.bench.contention import BusyProcesses
        with BusyProcesses([0]) as b:
            b.resume()
            print(b.procs[0].pid, flush=True)
            time.sleep(60)
    """)
    p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    child = int(p.stdout.readline())
    os.kill(p.pid, signal.SIGTERM)
    p.wait(timeout=30)
    state = "gone"
    for _ in range(50):  # the kernel delivers the SIGKILL right away; allow a loaded machine
        try:
            with open(f"/proc/{child}/status") as f:
                state = next(l for l in f if l.startswith("State:")).split()[1]
        except (FileNotFoundError, ProcessLookupError):
            state = "gone"
        if state in ("gone", "Z", "X"):
            break
        time.sleep(0.1)
    if state not in ("gone", "Z", "X"):
        os.kill(child, signal.SIGKILL)
    assert state in ("gone", "Z", "X"), f"the busy process is still {state}"


def test_ctrl_c_before_the_first_case_is_no_traceback(tmp_path, monkeypatch, capsys,
                                                      tiny_contention):
    # was a KeyboardInterrupt traceback from the load detection's sleep
    import sparsekern.timing.load as load_mod

    def interrupted():
        raise KeyboardInterrupt
    monkeypatch.setattr(load_mod, "detect_load", interrupted)
    out = tmp_path / "out"
    assert cli.main(["--contention", "--out", str(out), "--no-progress"]) == 130
    err = capsys.readouterr().err
    assert "interrupted before the first case: nothing measured, nothing written" in err
    assert not out.exists() and tiny_contention == []
