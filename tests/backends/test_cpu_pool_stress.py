"""The kernels' own thread pool under preemption: SPARSEKERN_POOL_FUZZ makes its threads
sleep at random where one call hands over to the next (what a busy machine does now and
then), and thousands of small calls with more threads than CPUs must all be right and none
may hang. Before the fix, a helper preempted inside take() at the end of one call claimed an
item of the next call: an item ran twice and the call never returned (CI hung on
test_each_thread_pool_gives_the_reference_result[3-own])."""
import os
import subprocess
import sys
import textwrap

import pytest

from sparsekern import _extension

pytestmark = pytest.mark.skipif(_extension._C is None, reason="needs the compiled extension")

SCRIPT = textwrap.dedent("""
    import sys, torch
    import sparsekern as sk
    from sparsekern import _extension
    assert _extension._C.cpu_pool() == "own", _extension._C.cpu_pool()
    torch.set_num_threads(3)
    g = torch.Generator().manual_seed(int(sys.argv[1]))
    M, K = 600, 512
    mats = []
    for layout, blocksize in (("csc", None), ("bsr", (8, 1)), ("2:4", None)):
        W = torch.randn(M, K, generator=g)
        if layout == "2:4":
            W = W * torch.tensor([1.0, 1.0, 0.0, 0.0]).repeat(K // 4)
        else:
            W = W * (torch.rand(M, K, generator=g) < 0.2)
        mats.append((sk.formats.to_sparse(W, layout, blocksize=blocksize), W.double()))
    calls = 0
    for rnd in range(int(sys.argv[2])):
        for A, W in mats:
            for N in (1, 2, 5, 40):  # item counts change from call to call
                B = torch.randn(K, N, generator=g)
                out = torch.ops.sparsekern.spmm(*A.op_args(), B)
                torch.testing.assert_close(out.double(), W @ B.double(), rtol=1e-4, atol=1e-4)
                calls += 1
    print("calls", calls)
""")


def test_own_pool_under_random_preemption_is_right_and_never_hangs():
    env = dict(os.environ, SPARSEKERN_CPU_POOL="own", SPARSEKERN_POOL_FUZZ="1")
    try:
        proc = subprocess.run([sys.executable, "-c", SCRIPT, "7", "400"], env=env,
                              capture_output=True, text=True, timeout=150)
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"the own pool hung under SPARSEKERN_POOL_FUZZ (no result in {e.timeout} s)")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "calls 4800" in proc.stdout


FORK_SCRIPT = textwrap.dedent("""
    import os, sys, threading, time, signal, torch
    import sparsekern as sk
    torch.set_num_threads(1)
    g = torch.Generator().manual_seed(0)
    W = torch.randn(128, 128, generator=g) * (torch.rand(128, 128, generator=g) < 0.2)
    A = sk.formats.to_sparse(W, "csc")
    B = torch.randn(128, 8, generator=g)
    ref = W.double() @ B.double()
    stop = False

    def hammer():  # fresh weights: every call inserts into the CSC cache under its lock
        while not stop:
            A2 = sk.formats.to_sparse(W, "csc")
            torch.ops.sparsekern.spmm(*A2.op_args(), B)

    t = threading.Thread(target=hammer)
    t.start()
    bad = 0
    for i in range(int(sys.argv[1])):
        time.sleep(0.001)
        pid = os.fork()
        if pid == 0:
            signal.alarm(20)  # a hung child ends by SIGALRM
            y = torch.ops.sparsekern.spmm(*A.op_args(), B)
            os._exit(0 if torch.allclose(y.double(), ref, atol=1e-4) else 3)
        _, status = os.waitpid(pid, 0)
        bad += status != 0
    stop = True
    t.join()
    print("bad children", bad)
""")


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
@pytest.mark.skipif("libasan" in os.environ.get("LD_PRELOAD", ""),
                    reason="under AddressSanitizer (the sanitizer job) a child forked while "
                           "another thread allocates can hang in the sanitizer's own allocator "
                           "lock; the main test job runs this test")
def test_a_child_forked_while_the_csc_cache_is_locked_does_not_hang():
    """fork() copies a mutex as it is: a child forked while another thread of the parent held
    the CSC cache's lock (a DataLoader forking workers during CSC inference) waited for ever
    on its first CSC call. SPARSEKERN_POOL_FUZZ holds that lock for a while now and then;
    every child must return the right product (before the fix: most children hung)."""
    env = dict(os.environ, SPARSEKERN_POOL_FUZZ="1")
    try:
        proc = subprocess.run([sys.executable, "-c", FORK_SCRIPT, "60"], env=env,
                              capture_output=True, text=True, timeout=600)
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"the fork test did not finish in {e.timeout} s")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "bad children 0" in proc.stdout, proc.stdout
