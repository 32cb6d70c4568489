# 2:4 with more than 2^31 stored values: row offsets past int32 (GEMV and a 16-column panel).
import torch, time, sparsekern
M, K = 70000, 65536
half = K // 2
t = time.time()
vals = torch.ones(M, half, dtype=torch.bfloat16)
meta = torch.full((M, K // 8), 0x44, dtype=torch.uint8)  # every group keeps columns 0 and 1
# distinguish rows: scale row m's values by a small integer so a wrong row offset shows
vals[:, :2] = (torch.arange(M) % 7 + 1).to(torch.bfloat16)[:, None]
print("built", time.time() - t, flush=True)
offs = torch.empty(0, dtype=torch.int32)
torch.set_num_threads(2)
for N in (1, 16):
    B = torch.ones(K, N)
    t = time.time()
    Y = torch.ops.sparsekern.spmm(vals, meta, offs, M, K, "2:4", B, None)
    el = time.time() - t
    want = (2 * (torch.arange(M) % 7 + 1) + (half - 2)).float()
    ok = torch.equal(Y, want[:, None].expand(M, N))
    print(f"N={N}: {el:.2f} s, exact={ok}", flush=True)
    if not ok:
        bad = (Y != want[:, None]).any(1).nonzero()[:5].flatten()
        print("first bad rows", bad.tolist(), Y[bad, 0].tolist(), want[bad].tolist())
# random B, rows sampled near and past the int32 boundary of m * half
B = torch.randn(K, 4, dtype=torch.float32)
Y = torch.ops.sparsekern.spmm(vals, meta, offs, M, K, "2:4", B, None)
rows = [0, 1, 65535, 65536, 65537, 69999] + torch.randint(0, M, (20,)).tolist()
worst = 0.0
for m in rows:
    v = vals[m].double().view(-1, 2)           # group g keeps columns 4g and 4g+1
    ref = (v[:, 0:1] * B.double()[0::4] + v[:, 1:2] * B.double()[1::4]).sum(0)
    worst = max(worst, ((Y[m].double() - ref).abs().max() / ref.abs().max()).item())
print("random B, sampled rows, worst rel err", worst)
