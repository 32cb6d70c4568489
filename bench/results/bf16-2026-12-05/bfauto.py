import sys, os, torch
sys.path.insert(0, os.environ.get("TREE", "/work/wt-csc"))
import sparsekern as sk
torch.manual_seed(0)
m = torch.nn.Sequential(torch.nn.Linear(1024, 1024), torch.nn.ReLU(), torch.nn.Linear(1024, 256))
with torch.no_grad():
    for l in (m[0], m[2]): l.weight[torch.rand_like(l.weight) < 0.95] = 0
m = m.to(torch.bfloat16)
s = sk.sparsify(m, layout="auto", example_input=torch.randn(1, 1024, dtype=torch.bfloat16))
print({k: v[0] for k, v in s.sparsekern_report.items()}, list(s.sparsekern_report.values())[0][1][:150])
