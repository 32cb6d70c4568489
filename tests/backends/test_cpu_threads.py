"""The CPU kernels across OpenMP threads and from several Python threads at once."""
import concurrent.futures as cf

import pytest
import torch

import sparsekern as sk
from sparsekern import _extension
from sparsekern.timing.machine import extension_pool

pytestmark = pytest.mark.skipif(_extension._C is None, reason="sparsekern._C is not built")

CASES = [("2:4", None), ("bsr", (32, 32)), ("bsr", (1, 8)), ("bsr", (8, 1)), ("bsr", (5, 7)),
         ("csc", None)]


def make(M, K, layout, block, seed):
    g = torch.Generator().manual_seed(seed)
    W = torch.randn(M, K, generator=g)
    if layout == "2:4":
        W = W.reshape(M, K // 4, 4)
        W = W.scatter(-1, W.abs().argsort(-1)[..., :2], 0.0).reshape(M, K)
    elif layout == "bsr":
        bm, bk = block
        mask = torch.rand(-(-M // bm), -(-K // bk), generator=g) < 0.3
        W = W * mask.repeat_interleave(bm, 0).repeat_interleave(bk, 1)[:M, :K]
        return W, sk.to_sparse(W, layout="bsr", blocksize=block)
    else:
        # Skewed rows and columns: the split by stored entries must still cover everything.
        dens = torch.linspace(0.02, 0.6, M)[:, None] * torch.linspace(0.1, 1.0, K)[None, :]
        W = W * (torch.rand(M, K, generator=g) < dens)
    return W, sk.to_sparse(W, layout=layout)


def expected(W, B, bias):
    return (W.double() @ B.double() + bias.double()[:, None]).float()


@pytest.fixture
def threads():
    prev = torch.get_num_threads()
    yield lambda n: torch.set_num_threads(n)
    torch.set_num_threads(prev)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c[0] if c[1] is None else f"bsr{c[1]}")
@pytest.mark.parametrize("nthreads", [2, 3])
def test_openmp_threads_give_the_reference_result(case, nthreads, threads):
    """Big enough that the kernels split the work (several parts per thread, taken
    dynamically; N=300 makes threads take whole panels with 32-column panels; N=40-300
    leave 2-7 panels, whose (panel, part) pairs each thread claims per panel, staying on the
    panel it packed); every part is written once."""
    layout, block = case
    W, A = make(600, 512, layout, block, seed=3)
    threads(nthreads)
    bias = torch.randn(600)
    for N in (1, 9, 40, 100, 200, 300):
        for B in (torch.randn(512, N), torch.randn(N, 512).t()):
            out = torch.ops.sparsekern.spmm(*A.op_args(), B, bias)
            torch.testing.assert_close(out, expected(W, B, bias), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("pool", ["auto", "torch", "own"])
@pytest.mark.parametrize("nthreads", [2, 3])
def test_each_thread_pool_gives_the_reference_result(pool, nthreads, threads, cpu_pool_env):
    """SPARSEKERN_CPU_POOL: torch's intra-op threads (auto, torch) or the kernels' own pool,
    forward and both backward kernels, every layout, between torch ops on the intra-op pool."""
    cpu_pool_env(pool)
    assert _extension._C.cpu_pool() == pool
    threads(nthreads)
    for layout, block in CASES:
        W, A = make(600, 512, layout, block, seed=5)
        bias = torch.randn(600)
        for N in (1, 40, 300):
            B = torch.randn(N, 512).t()
            torch.nn.functional.gelu(torch.randn(256, 256))  # torch's team has just run
            out = torch.ops.sparsekern.spmm(*A.op_args(), B, bias)
            torch.testing.assert_close(out, expected(W, B, bias), rtol=1e-4, atol=1e-4)
        values = A.values.detach().clone().requires_grad_(True)
        B = torch.randn(512, 64, requires_grad=True)
        out = torch.ops.sparsekern.spmm(values, A.indices, A.offsets, 600, 512, A.layout, B)
        G = torch.randn_like(out)
        gv, gB = torch.autograd.grad(out, (values, B), G)
        ref_gB = (W.double().t() @ G.double()).float()
        torch.testing.assert_close(gB, ref_gB, rtol=1e-4, atol=1e-3)
        # the values' gradient, dense: (G @ B^T) at the stored entries
        dense_gv = sk.formats.from_parts(A.layout, gv, A.indices, A.offsets, A.shape).to_dense()
        ref_gv = (G.double() @ B.detach().double().t()).float() * (W != 0)
        torch.testing.assert_close(dense_gv, ref_gv, rtol=1e-4, atol=1e-3)


def test_unknown_thread_pool_is_rejected_naming_the_choices(cpu_pool_env):
    cpu_pool_env("openmp")  # a bad value is reported at the next call, not at reload
    W, A = make(64, 64, "csc", None, seed=1)
    with pytest.raises(ValueError, match=r"SPARSEKERN_CPU_POOL='openmp' is not a thread pool "
                                         r"choice; expected one of 'auto' .*'torch', 'own'"):
        torch.ops.sparsekern.spmm(*A.op_args(), torch.ones(64, 2))
    with pytest.raises(ValueError, match=r"SPARSEKERN_CPU_POOL='openmp'"):
        _extension._C.cpu_pool()
    # extension_pool() answered None ("unknown") where every kernel call raised
    with pytest.raises(ValueError, match=r"SPARSEKERN_CPU_POOL='openmp' is not a thread pool"):
        extension_pool()
    cpu_pool_env(None)
    assert _extension._C.cpu_pool() == "auto" == extension_pool()


MS = 1_000_000  # ns


@pytest.mark.parametrize("start,entered,done,end,mine,items,nthreads,stalled", [
    (0, 0, 8 * MS, 8 * MS + 100_000, 4, 8, 2, False),   # half the items, a short wait: fine
    (0, 0, 4 * MS, 4 * MS + 1_600_000, 4, 8, 2, False),  # waited 1.6 ms < 0.25 + 1.5 * 1 ms
    (0, 0, 4 * MS, 4 * MS + 1_800_000, 4, 8, 2, True),   # waited longer: a teammate was late
    (0, 0, 400_000, 4_400_000, 4, 8, 2, True),           # a 0.4 ms call held 4 ms (a slice)
    (0, 0, 7 * MS, 7 * MS, 7, 8, 2, True),               # the caller ran 7 of 8 items (> 75%)
    (0, 0, 6 * MS, 6 * MS, 6, 8, 2, False),              # 6 of 8: exactly 75%, fine
    # A short call where the teammate joined late (a wake-up on a VM): not a stall, until
    # the caller has been busy longer than 0.25 ms.
    (0, 0, 100_000, 100_000, 7, 8, 2, False),
    (0, 0, 250_000, 250_000, 8, 8, 2, False),
    (0, 0, 250_001, 250_001, 8, 8, 2, True),
    (0, 100_000, 350_001, 350_001, 8, 8, 2, True),       # busy from entry, not from start
    (0, 0, 3 * MS, 3 * MS, 3, 3, 2, False),              # too few items to tell
    (0, 0, 1 * MS, 1 * MS, 1, 1, 1, False),              # one thread: never
    # The region started 8 ms late (a team thread descheduled before it docked), then
    # everything was quick and shared evenly: a stall all the same.
    (0, 8 * MS, 8 * MS + 20_000, 8 * MS + 25_000, 1, 2, 2, True),
    (0, 200_000, 400_000, 410_000, 2, 4, 2, False),      # entered 0.2 ms late: within 0.25 ms
    (0, 300_000, 500_000, 510_000, 2, 4, 2, True),       # 0.3 ms late: a stall
    # The late entry no longer inflates the mean item time that the end wait is judged by.
    (0, 8 * MS, 8 * MS + 400_000, 8 * MS + 2_000_000, 4, 8, 2, True),
])
def test_stall_guard_decision_on_fake_clocks(start, entered, done, end, mine, items, nthreads,
                                             stalled):
    """auto backs off to the own pool when team_stalled says so (csrc/ops.cpp)."""
    assert torch.ops.sparsekern._pool_team_stalled(start, entered, done, end, mine, items,
                                                   nthreads) is stalled


@pytest.mark.parametrize("wall,cpu,descheduled", [
    (4 * MS, 4 * MS, False),          # ran the whole time
    (4 * MS, 3 * MS, False),          # exactly 3/4 of the time on a CPU: fine
    (4 * MS, 3 * MS - 1, True),       # less: it shared its CPU
    (4 * MS, 2 * MS, True),           # time-sliced with another thread at half speed
    (12 * MS, 4 * MS, True),          # lost whole scheduler slices
    (250_000, 0, False),              # too short to judge (exactly kStallNanos)
    (250_001, 100_000, True),         # just long enough
    (4 * MS, -1, False),              # no thread CPU clock: never
])
def test_descheduled_team_thread_on_fake_clocks(wall, cpu, descheduled):
    """auto also backs off when a team thread ran on a CPU for < 3/4 of its time on its items
    (csrc/ops.cpp thread_descheduled): two threads time-sliced on one CPU split the items
    evenly and none is late, which team_stalled cannot see."""
    assert torch.ops.sparsekern._pool_thread_descheduled(wall, cpu) is descheduled


@pytest.mark.parametrize("previous,stalled,backoff", [
    (0, False, 0),                 # a clean call: no back-off
    (0, True, 50 * MS),            # the first stall: a short back-off
    (50 * MS, True, 100 * MS),     # the retry stalled again: twice as long
    (800 * MS, True, 1600 * MS),
    (1600 * MS, True, 2000 * MS),  # at most 2 s
    (2000 * MS, True, 2000 * MS),
    (2000 * MS, False, 0),         # a clean retry resets it
])
def test_stall_backoff_doubles_while_retries_stall(previous, stalled, backoff):
    """One false stall (a late first wake-up) costs 50 ms on the own pool, not 2 s."""
    assert torch.ops.sparsekern._pool_next_backoff(previous, stalled) == backoff


@pytest.mark.parametrize("M", [1, 3, 9])
def test_fewer_rows_than_parts(M, threads):
    """A split asks for 4 parts per thread; with fewer rows every row is still written once."""
    threads(3)
    for layout, block in CASES:
        W, A = make(M, 4096, layout, block, seed=M)
        bias = torch.randn(M)
        for N in (1, 300):
            B = torch.randn(4096, N)
            out = torch.ops.sparsekern.spmm(*A.op_args(), B, bias)
            torch.testing.assert_close(out, expected(W, B, bias), rtol=1e-4, atol=1e-3)


def test_many_python_threads_at_once(threads):
    threads(2)
    work = []
    for i, (layout, block) in enumerate(CASES):
        W, A = make(192, 256, layout, block, seed=10 + i)
        for N in (1, 4, 33):
            B = torch.randn(N, 256).t() if N % 2 else torch.randn(256, N)
            bias = torch.randn(192)
            work.append((A, B, bias, expected(W, B, bias)))

    def run(item):
        A, B, bias, ref = item
        for _ in range(5):
            out = torch.ops.sparsekern.spmm(*A.op_args(), B, bias)
            if not torch.allclose(out, ref, rtol=1e-4, atol=1e-4):
                return False
        return True

    with cf.ThreadPoolExecutor(max_workers=6) as pool:
        results = list(pool.map(run, work * 3))
    assert all(results)


def test_fresh_csc_weights_from_many_threads(threads):
    """Concurrent first calls build the per-weight CSC repack once, safely."""
    threads(1)
    W, A = make(300, 200, "csc", None, seed=7)
    B = torch.randn(200, 16)
    bias = torch.zeros(300)
    ref = expected(W, B, bias)

    def run(_):
        fresh = sk.formats.from_parts("csc", A.values.clone(), A.indices.clone(),
                                      A.offsets.clone(), A.shape)
        return torch.allclose(torch.ops.sparsekern.spmm(*fresh.op_args(), B), ref, rtol=1e-4,
                              atol=1e-4)

    with cf.ThreadPoolExecutor(max_workers=8) as pool:
        assert all(pool.map(run, range(32)))


_FORK_WORK = []  # (args, B, reference) built by the parent, inherited by the forked child


def _child_runs_kernels(conn):
    """In a forked child (the parent's pool helpers do not exist there) every layout still
    gives the reference result on 2 threads. Only sparsekern kernels run here: torch's own
    OpenMP pool hangs after fork once the parent has used it."""
    ok = all(torch.equal(torch.ops.sparsekern.spmm(*args, B), ref)
             for args, B, ref in _FORK_WORK)
    conn.send(ok)
    conn.close()


@pytest.mark.skipif(not hasattr(__import__("os"), "fork"), reason="no fork() on this platform")
@pytest.mark.parametrize("pool", ["auto", "torch", "own"])
def test_kernels_work_in_a_forked_child(threads, pool, cpu_pool_env):
    """The pool's helper threads (or torch's team) are started in the parent first; the child
    gets a fresh own pool, whatever SPARSEKERN_CPU_POOL says (small outputs: torch's
    elementwise ops stay on one thread in the child)."""
    import multiprocessing as mp

    cpu_pool_env(pool)
    threads(2)
    _FORK_WORK.clear()
    for layout, block in CASES:
        W, A = make(600, 512, layout, block, seed=21)
        for N in (1, 40):
            B = torch.randn(512, N)
            out = torch.ops.sparsekern.spmm(*A.op_args(), B)  # also starts the parent's pool
            torch.testing.assert_close(out, expected(W, B, torch.zeros(600)), rtol=1e-4,
                                       atol=1e-3)
            _FORK_WORK.append((A.op_args(), B, out))
    ctx = mp.get_context("fork")
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=_child_runs_kernels, args=(child,))
    proc.start()
    try:
        assert parent.poll(120), "the forked child did not answer within 120 s"
        assert parent.recv() is True
    finally:
        proc.join(30)
        if proc.is_alive():
            proc.kill()
    assert proc.exitcode == 0
    _FORK_WORK.clear()


def test_a_busy_pool_runs_nested_and_concurrent_calls_serially(threads):
    """Calls from a Python thread while another thread's call holds the pool run on their
    own thread and still give the reference answer (many overlapping calls, 2 threads)."""
    threads(2)
    W, A = make(1024, 1024, "2:4", None, seed=22)
    B = torch.randn(1024, 64)
    ref = W @ B

    def run(_):
        return all(torch.allclose(torch.ops.sparsekern.spmm(*A.op_args(), B), ref, rtol=1e-4,
                                  atol=1e-3) for _ in range(10))

    with cf.ThreadPoolExecutor(max_workers=4) as pool:
        assert all(pool.map(run, range(8)))


def _thread_masks():
    import os
    masks = {}
    for tid in os.listdir("/proc/self/task"):
        try:
            masks[int(tid)] = os.sched_getaffinity(int(tid))
        except OSError:  # the thread ended meanwhile
            pass
    return masks


@pytest.mark.skipif(not hasattr(__import__("os"), "sched_getaffinity") or
                    len(__import__("os").sched_getaffinity(0)) < 2,
                    reason="needs Linux CPU affinity and at least 2 usable CPUs")
def test_own_pool_helpers_leave_the_callers_cpu_and_touch_no_other_thread(cpu_pool_env):
    # A helper woken on the caller's CPU moves to the others the process may use (Linux puts
    # a woken thread beside its waker when no CPU is idle); no other thread's mask changes.
    import os
    import threading
    cpu_pool_env("own")
    process = os.sched_getaffinity(0)
    main = threading.get_native_id()
    W, A = make(512, 512, "2:4", None, 0)
    x = torch.randn(512, 64)
    prev = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        torch.ops.sparsekern.spmm(*A.op_args(), x)  # the pool's helper and torch's team exist
        W @ x
        before = _thread_masks()
        cpu = min(process)
        os.sched_setaffinity(0, {cpu})  # this (the calling) thread only
        try:
            for _ in range(20):
                torch.testing.assert_close(torch.ops.sparsekern.spmm(*A.op_args(), x), W @ x,
                                           rtol=1e-4, atol=1e-4)
        finally:
            os.sched_setaffinity(0, process)
    finally:
        torch.set_num_threads(prev)
    after = _thread_masks()
    assert after[main] == process
    for tid, mask in after.items():
        if tid == main or tid not in before or before[tid] == mask:
            continue  # (a thread made meanwhile inherits its maker's mask)
        # the only change allowed: one of our helpers, on every CPU but one (the caller's
        # of the call it woke for)
        assert mask and mask < process and len(mask) == len(process) - 1, (tid, mask)
