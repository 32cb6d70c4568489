"""Few query rows against a key cache (decoding) and mid-size shapes: the eager formula (matmul,
softmax, matmul, copy to [B, S, H, D]) against torch.ops.sparsekern.attention, q/k/v stored
[B, S, H, D]; 5 interleaved rounds of 30 calls, medians in us, 2 threads.

    PYTHONPATH=. python bench/results/attention-2026-12-08/decode_bench.py
"""
import torch, time, statistics, sparsekern as sk
torch.set_num_threads(2)
def eager(q,k,v,mask):
    s = torch.matmul(q, k.transpose(2,3)) * q.shape[-1]**-0.5
    if mask is not None: s = s + mask
    return torch.matmul(torch.softmax(s,-1), v).transpose(1,2).contiguous()
def fused(q,k,v,mask):
    return torch.ops.sparsekern.attention(q,k,v,mask,None).transpose(1,2)
for (B,H,Sq,Sk,D) in [(1,12,1,128,64),(1,12,1,1024,64),(4,32,1,512,128),(1,12,16,16,32),(1,12,128,128,64),(8,12,128,128,64)]:
    q = torch.randn(B,Sq,H,D).transpose(1,2); k = torch.randn(B,Sk,H,D).transpose(1,2); v = torch.randn(B,Sk,H,D).transpose(1,2)
    with torch.inference_mode():
        res={}
        for n,f in (("eager",eager),("fused",fused)):
            for _ in range(5): f(q,k,v,None)
        for r in range(5):
            for n,f in (("eager",eager),("fused",fused)):
                ts=[]
                for _ in range(30):
                    t=time.perf_counter(); f(q,k,v,None); ts.append(time.perf_counter()-t)
                res.setdefault(n,[]).append(statistics.median(ts)*1e6)
    print((B,H,Sq,Sk,D), " ".join("%s %.1f us" % (n, statistics.median(v)) for n,v in res.items()))
