# CSC with more than 2^31 stored values (int64 column pointer): GEMV and a 4-column product.
import torch, time
import sparsekern
M, K = 30000, 72000            # every entry stored: nnz = 2.16e9 > 2^31 - 1
nnz = M * K
t = time.time()
vals = torch.ones(nnz, dtype=torch.bfloat16)
rows = torch.arange(M, dtype=torch.int16).repeat(K)
col = torch.arange(K + 1, dtype=torch.int64) * M
# mark column k's values with a small integer so a wrong offset shows
vals.view(K, M)[:, 0] = (torch.arange(K) % 5 + 1).to(torch.bfloat16)
print("built", round(time.time() - t, 1), "s", flush=True)
torch.set_num_threads(2)
x = torch.ones(K, 1)
t = time.time()
Y = torch.ops.sparsekern.spmm(vals, rows, col, M, K, "csc", x, None)
print("N=1", round(time.time() - t, 1), "s", flush=True)
want = torch.full((M,), float(K))
want[0] = float((torch.arange(K) % 5 + 1).sum())
print("exact:", torch.equal(Y[:, 0], want), Y[:3, 0].tolist(), want[:3].tolist())
