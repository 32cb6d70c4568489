# BSR 32x32 with more than 2^31 stored values (offsets count blocks, int32): GEMV and N = 8.
import time
import torch
import sparsekern  # noqa: F401 (registers the op)
bm = bk = 32
MB, KB = 1536, 1536                        # every block stored: 2.36M blocks, 2.42e9 values
M, K = MB * bm, KB * bk
t = time.time()
vals = torch.ones(MB * KB, bm, bk, dtype=torch.bfloat16)
# block (i, j): row r of the block holds (i % 3 + 1) in its first column, so each output row
# of block row i sums to KB * ((i % 3 + 1) + bk - 1)
vals.view(MB, KB, bm, bk)[:, :, :, 0] = (torch.arange(MB) % 3 + 1).to(torch.bfloat16)[:, None, None]
idx = torch.arange(KB, dtype=torch.int32).repeat(MB)
offs = torch.arange(MB + 1, dtype=torch.int32) * KB
print("built", round(time.time() - t, 1), "s", flush=True)
torch.set_num_threads(2)
want = (KB * ((torch.arange(MB) % 3 + 1) + bk - 1)).float().repeat_interleave(bm)
for N in (1, 8):
    B = torch.ones(K, N)
    t = time.time()
    Y = torch.ops.sparsekern.spmm(vals, idx, offs, M, K, "bsr", B, None)
    print(f"N={N}: {time.time() - t:.2f} s, exact={torch.equal(Y, want[:, None].expand(M, N))}",
          flush=True)
