"""Load detection (sparsekern.timing.load) on a fake /proc: no real machine state is read."""
import pytest

from sparsekern.timing import load


def fake_proc(running, steal_per_read=0, busy_per_read=100, loadavg="0.50 0.40 0.30 1/99 7"):
    """A reader of /proc/stat and /proc/loadavg: procs_running from ``running`` (one value
    per read), the cpu line's ticks growing by ``busy_per_read`` (of which steal_per_read
    stolen) at every read."""
    reads = {"n": 0}

    def reader(path):
        if path == "/proc/loadavg":
            if loadavg is None:
                raise OSError("no loadavg")
            return loadavg
        if running is None:
            raise OSError("no /proc/stat")
        i = reads["n"]
        reads["n"] += 1
        user = 1000 + i * (busy_per_read - steal_per_read)
        steal = 10 + i * steal_per_read
        return (f"cpu  {user} 0 0 5000 0 0 0 {steal} 0 0\ncpu0 1 2 3 4 5 6 7 8 0 0\n"
                f"procs_running {running[min(i, len(running) - 1)]}\nprocs_blocked 0\n")
    return reader


def detect(reader, **kw):
    return load.detect_load(usable=2, reader=reader, sleep=lambda s: None, **kw)


def test_quiet_machine_gets_every_cpu():
    r = detect(fake_proc([1, 1, 1, 1, 1]))
    assert not r.busy and r.others == 0 and r.recommended_threads == 2
    assert r.steal == 0 and r.load_avg == 0.5
    assert r.summary().startswith("machine quiet: no other load seen (2 usable CPUs")


def test_one_busy_process_leaves_one_thread():
    r = detect(fake_proc([2, 2, 3, 2, 2]))
    assert r.busy and r.others == 1.0 and r.recommended_threads == 1
    assert "1.0 other runnable threads" in r.summary()
    assert r.summary().endswith("recommended threads: 1")


def test_steal_counts():
    r = detect(fake_proc([1] * 5, steal_per_read=30))
    assert r.steal == pytest.approx(0.3)
    assert r.busy and "30% of CPU time stolen" in r.reasons[0]
    assert r.recommended_threads == 1  # 2 - 0 - 2 * 0.3 = 1.4 -> 1


def test_own_timings_spread_or_slices_halve_the_threads():
    wide = detect(fake_proc([1] * 5), timings=[1e-3, 1e-3, 3e-3, 1e-3, 4e-3])
    assert wide.busy and wide.timing_spread > load.SPREAD_LIMIT
    assert wide.recommended_threads == 1 and "own timings spread" in wide.reasons[0]
    sliced = detect(fake_proc([1] * 5), timings=[12e-3, 12e-3, 8e-3, 12e-3])
    assert sliced.quantized and sliced.recommended_threads == 1
    steady = detect(fake_proc([1] * 5), timings=[1.0e-3, 1.01e-3, 0.99e-3, 1.0e-3])
    assert not steady.busy and steady.recommended_threads == 2


def test_unreadable_proc_falls_back_to_the_load_average():
    r = detect(fake_proc(None, loadavg="3.0 2.0 1.0 1/9 1"))
    assert r.others == 2.0 and r.steal is None and r.recommended_threads == 1
    nothing = detect(fake_proc(None, loadavg=None))
    # os.getloadavg() may still answer on this machine: only the shape is checked
    assert nothing.steal is None and nothing.recommended_threads >= 1
    assert isinstance(nothing.to_dict(), dict)


@pytest.mark.parametrize("samples, want", [
    ([12e-3, 12e-3, 12e-3], True), ([8e-3, 12.1e-3, 4e-3, 16e-3], True),
    ([1e-3, 1e-3, 1e-3], False), ([5e-3, 7e-3, 13.7e-3], False), ([12e-3, 12e-3], False),
    ([78.2e-3, 77.5e-3, 79.9e-3], False)])  # long calls are near some multiple by chance
def test_quantized_to_slices(samples, want):
    assert load.quantized_to_slices(samples) is want


def test_recommend_threads_bounds():
    assert load.recommend_threads(8, 0.0) == 8
    assert load.recommend_threads(8, 3.4) == 5
    assert load.recommend_threads(2, 5.0) == 1
    assert load.recommend_threads(4, 0.0, unstable=True) == 2
    assert load.recommend_threads(1, None, None, True) == 1


def test_spread():
    assert load.spread([1.0]) is None and load.spread([0.0, 0.0]) is None
    assert load.spread([1.0, 1.0, 1.0, 1.0]) == 0.0
    assert load.spread([1.0, 2.0, 3.0, 4.0, 5.0]) == pytest.approx(2.0 / 3.0)
