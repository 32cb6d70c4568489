"""OthersMeter on a fake /proc/stat and fake clocks (no timing)."""
import pytest

from sparsekern.timing.load import OthersMeter


def _stat(cpu0, cpu1, cpu2=(0,) * 8):
    """/proc/stat text whose cpuN lines hold user..steal ticks (idle 4th, iowait 5th)."""
    line = lambda n, v: f"cpu{n} " + " ".join(map(str, v)) + " 0 0"
    total = [a + b + c for a, b, c in zip(cpu0, cpu1, cpu2)]
    return "\n".join(["cpu  " + " ".join(map(str, total)) + " 0 0", line(0, cpu0),
                      line(1, cpu1), line(2, cpu2), "procs_running 1"])


class Fake:
    def __init__(self, stats, clocks, own):
        self.stats, self.clocks, self.own = iter(stats), iter(clocks), iter(own)

    def meter(self, cpus=(0, 1)):
        return OthersMeter(reader=lambda path: next(self.stats), clock=lambda: next(self.clocks),
                           own_cpu_s=lambda: next(self.own), cpus=cpus, tick_s=0.01)


def test_a_neighbour_during_the_measurement_is_counted():
    # 2 s of wall time; cpu0+cpu1 busy ticks go up by 300 (3.0 CPU-seconds); our own
    # process used 1.2 s of CPU: the others used 1.8 s over 2 s, 0.9 CPUs
    f = Fake([_stat((100, 0, 0, 500, 0, 0, 0, 0), (100, 0, 0, 500, 0, 0, 0, 0)),
              _stat((250, 0, 0, 550, 0, 0, 0, 0), (250, 0, 0, 550, 0, 0, 0, 0))],
             [10.0, 12.0], [5.0, 6.2])
    assert f.meter().start().stop() == pytest.approx(0.9)


def test_idle_iowait_and_other_cpus_do_not_count():
    # idle and iowait ticks grow; cpu2 (not ours) is fully busy; our own work explains the rest
    f = Fake([_stat((100, 0, 0, 500, 10, 0, 0, 0), (0,) * 8, (0,) * 8),
              _stat((150, 0, 0, 650, 60, 0, 0, 0), (0, 0, 0, 200, 0, 0, 0, 0),
                    (200, 0, 0, 0, 0, 0, 0, 0))],
             [0.0, 2.0], [0.0, 0.5])
    assert f.meter().start().stop() == pytest.approx(0.0)


def test_steal_counts_as_others():
    f = Fake([_stat((0,) * 8, (0,) * 8), _stat((0, 0, 0, 100, 0, 0, 0, 100), (0,) * 8)],
             [0.0, 2.0], [0.0, 0.0])
    assert f.meter().start().stop() == pytest.approx(0.5)


def test_unreadable_proc_and_misuse():
    def unreadable(path):
        raise OSError("no /proc")
    m = OthersMeter(reader=unreadable, clock=iter([0.0, 1.0]).__next__,
                    own_cpu_s=lambda: 0.0, cpus=[0], tick_s=0.01)
    assert m.start().stop() is None
    with pytest.raises(RuntimeError, match=r"OthersMeter.stop\(\) before start\(\)"):
        OthersMeter(cpus=[0], tick_s=0.01).stop()
