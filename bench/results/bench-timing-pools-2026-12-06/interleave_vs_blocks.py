"""Warm timings of BSR 70% 768x3072 and the dense baselines, 2 threads: each alone (after a
0.3 s pause and 10 warm calls), by time_interleaved (one sample per candidate in turn, as the
benchmark's layer cases did before 2026-12-06) and by time_blocks (a block per candidate,
warm-up first).
Run: env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE PYTHONPATH=. python interleave_vs_blocks.py"""
import torch, numpy as np, time, statistics as st, sparsekern as sk
from sparsekern.timing.timers import time_interleaved, time_blocks, TimerSettings
torch.set_num_threads(2); torch.manual_seed(0)
M,K=768,3072
mask=(torch.rand(M//32,K//32)>=0.7).repeat_interleave(32,0).repeat_interleave(32,1)
W=torch.randn(M,K)*mask; B=sk.to_sparse(W,layout="bsr",blocksize=(32,32))
Wt=W.t().contiguous().numpy()
for N in (1, 32):
    x=torch.randn(N,K); xn=x.numpy()
    fns={"sk":(lambda a: sk.spmm(B,a.t()), x), "F.linear":(lambda a: torch.nn.functional.linear(a,W), x),
         "matmul":(lambda a: torch.matmul(W,a.t()), x), "numpy":(lambda a: a@Wt, xn)}
    for name,(f,a) in fns.items():
        for _ in range(5): f(a)
    alone={}
    for name,(f,a) in fns.items():
        time.sleep(0.3); 
        for _ in range(10): f(a)
        ts=[]
        for _ in range(50):
            t=time.perf_counter(); f(a); ts.append(time.perf_counter()-t)
        alone[name]=st.median(ts)*1e3
    ti=time_interleaved(fns)
    tb=time_blocks(fns)
    print(f"N={N}")
    for name in fns:
        print(f"  {name:9s} alone {alone[name]:.3f}  interleaved {ti[name]['median_s']*1e3:.3f}  blocks {tb[name]['median_s']*1e3:.3f}")
