import torch, time, sparsekern as sk, sys
from sparsekern import prune
torch.manual_seed(0)
def t(f, x, n=1000):
    for _ in range(50): f(x)
    ts=[]
    for r in range(7):
        t0=time.perf_counter()
        for _ in range(n): f(x)
        ts.append((time.perf_counter()-t0)/n*1e6)
    ts.sort(); return ts[3]
N = int(sys.argv[1]) if len(sys.argv) > 1 else 17
for th in (1, 2):
  torch.set_num_threads(th)
  for (o,i) in [(384,384),(1536,384),(384,1536)]:
    res={}
    x = torch.randn(N,i)
    with torch.inference_mode():
        lin = torch.nn.Linear(i,o)
        res['dense']=t(lin,x)
    for lay, gran, r in [('2:4','2:4',None),('csc','fine',0.5),('csc7','fine',0.7),('csc9','fine',0.9)]:
        m = torch.nn.Sequential(torch.nn.Linear(i,o))
        prune.prune_model(m, r, gran)
        s = sk.sparsify(m, layout=lay[:3] if lay!='2:4' else '2:4')
        with torch.inference_mode():
            res[lay]=t(s,x)
    print(N, th, o,i,{k:round(v,1) for k,v in res.items()}, flush=True)
