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
