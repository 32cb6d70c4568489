import torch, time
torch.set_num_threads(2)
import sparsekern as sk
op = torch.ops.sparsekern._spmm_transposed_cpu
M = K = 1536
W = torch.randn(M, K); g = W.reshape(M, -1, 4)
W = (g * torch.zeros_like(g, dtype=torch.bool).scatter_(-1, g.abs().topk(2, -1).indices, True)).reshape(M, K)
A = sk.to_sparse(W, "2:4")
for N in [1, 16, 100, 300]:
    for nf in [False, True]:
        G = torch.randn(M, N)
        if nf: G[3, 0] = float("inf")
        op(A.values, A.indices, A.offsets, M, K, "2:4", G)
        t = time.perf_counter(); [op(A.values, A.indices, A.offsets, M, K, "2:4", G) for _ in range(5)]
        print(f"N={N} inf in G={nf}: {(time.perf_counter()-t)/5*1e3:.2f} ms")
