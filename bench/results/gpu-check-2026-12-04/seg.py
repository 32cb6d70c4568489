import sys, torch, sparsekern  # noqa: F401
import os, sys; sys.path.insert(0, os.getcwd())  # run from the repository root
DEV = "cuda"
which = sys.argv[1]
out = torch.empty(4, 2, device=DEV, dtype=torch.float16)
B = torch.randn(8, 2, device=DEV, dtype=torch.float16)
print("calling", which, flush=True)
try:
    if which == "a":
        torch.ops.sparsekern._spmm_cuda(torch.zeros(3, 4, device=DEV, dtype=torch.float16),
                                        torch.zeros(1, 1, 16, device=DEV, dtype=torch.int32),
                                        torch.empty(0, device=DEV), 4, 8, "2:4", B, None, out)
    else:
        torch.ops.sparsekern._spmm_cuda(torch.zeros(1, device=DEV), torch.zeros(1, device=DEV),
                                        torch.zeros(1, device=DEV), 4, 9, "csc", B, None, out)
except Exception as e:
    print("raised", type(e).__name__, str(e)[:300], flush=True)
print("done", which, flush=True)
