"""With inductor freezing, does a compiled model of sparsekern layers see a weight edited in
place after compiling? python freeze_follows_edits.py csc (the layer must end up sparse)."""
import torch, torch._inductor.config as ic
import sparsekern as sk
import sys
LAYOUT = sys.argv[1]
ic.freezing = True
torch.manual_seed(0)
m = torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.GELU(), torch.nn.Linear(64, 32))
with torch.no_grad():
    for l in (m[0], m[2]):
        l.weight[l.weight.abs() < 0.1] = 0
s = sk.sparsify(m, layout=LAYOUT)
x = torch.randn(8, 64)
c = torch.compile(s)
with torch.inference_mode():
    a = c(x)
    print(type(s[0]).__name__, [n for n, _ in s[0].named_buffers()][:4], [n for n, _ in s[0].named_parameters()][:4])
    p = dict(s[0].named_parameters()).get("values", None)
    p = p if p is not None else dict(s[0].named_buffers())["values"]
    p.mul_(0.5)
    b = c(x); ref = s(x)
print("compiled output changed after weight edit:", not torch.equal(a, b), " matches eager:", torch.allclose(b, ref, atol=1e-5))
