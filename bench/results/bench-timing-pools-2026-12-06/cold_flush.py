import torch, numpy as np, time, statistics as st, sparsekern as sk
"""Cold timings (a cache flush before every sample) of BSR 90% 4096² and the dense baselines,
by how the samples are ordered and how the cache is flushed, 2 threads.
Run: env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE PYTHONPATH=. python cold_flush.py
- interleaved/torchflush: one sample per candidate in turn, flush = torch sum (OpenMP pool),
  as the benchmark did before 2026-12-06;
- blocks/torchflush: a block of 5 warm calls + 5 samples per candidate, the same flush;
- blocks/threadflush: blocks, flush = NumPy sums of two halves on two plain threads (no pool);
- blocks/poolflush: blocks, flush = CacheFlusher as committed: on the pool the candidate uses
  (a NumPy GEMV over the buffer before a NumPy call, a torch sum before the others)."""
from concurrent.futures import ThreadPoolExecutor
from sparsekern.timing.timers import CacheFlusher
torch.set_num_threads(2); torch.manual_seed(0)
fl = CacheFlusher(); tbuf = fl.buffer; nbuf = tbuf.numpy(); half = nbuf.size // 2
ex = ThreadPoolExecutor(1)
def flush_torch(): tbuf.sum()
def flush_threads():
    f = ex.submit(nbuf[half:].sum); nbuf[:half].sum(); f.result()
M,K=4096,4096
mask=(torch.rand(M//32,K//32)>=0.9).repeat_interleave(32,0).repeat_interleave(32,1)
W=torch.randn(M,K)*mask; B=sk.to_sparse(W,layout="bsr",blocksize=(32,32)); Wt=W.t().contiguous().numpy()
for N in (1, 32):
    x=torch.randn(N,K); xn=x.numpy()
    fns={"sk":lambda: sk.spmm(B,x.t()), "F.linear":lambda: torch.nn.functional.linear(x,W),
         "matmul":lambda: torch.matmul(W,x.t()), "numpy":lambda: xn@Wt}
    args={"sk":x,"F.linear":x,"matmul":x,"numpy":xn}
    for f in fns.values(): f()
    res={}
    for mode in ("interleaved/torchflush","blocks/torchflush","blocks/threadflush","blocks/poolflush"):
        ts={k:[] for k in fns}
        flush = {"torchflush": lambda a: flush_torch(), "threadflush": lambda a: flush_threads(),
                 "poolflush": lambda a: fl(None, a)}[mode.split("/")[1]]
        if mode.startswith("inter"):
            for _ in range(15):
                for k,f in fns.items():
                    flush(args[k]); t=time.perf_counter(); f(); ts[k].append(time.perf_counter()-t)
        else:
            for _ in range(3):
                for k,f in fns.items():
                    for _ in range(5): f()
                    for _ in range(5):
                        flush(args[k]); t=time.perf_counter(); f(); ts[k].append(time.perf_counter()-t)
        res[mode]={k:st.median(v)*1e3 for k,v in ts.items()}
    print(f"N={N}")
    for mode,r in res.items():
        best=min(r['F.linear'],r['matmul'],r['numpy'])
        print(f"  {mode:24s} " + "  ".join(f"{k} {v:.3f}" for k,v in r.items()) + f"   best dense/sk {best/r['sk']:.2f}x")
