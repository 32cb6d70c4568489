import torch, sparsekern as sk
torch.manual_seed(0); torch.set_num_threads(2)
M, K = 1536, 384
W = torch.randn(M, K); G = W.view(M, K // 4, 4)
W = G.scatter(-1, G.abs().argsort(-1)[..., :2], 0.0).reshape(M, K)
lin = torch.nn.Linear(K, M); lin.weight.data.copy_(W)
sl = sk.SparseLinear.from_dense(lin, layout="2:4")
for N in (300, 2048):
    x = torch.randn(N, K)
    for _ in range(3): sl(x)  # warm: the hybrid blocks run
    def check(tag):
        dw = sl.to_dense().weight.detach().double()
        want = x.double() @ dw.t() + sl.bias.detach().double()
        with torch.inference_mode():
            got = sl(x)
        print(f"N={N} {tag}: max |diff| {(got.double() - want).abs().max().item():.2e}, |out| max {want.abs().max().item():.1f}")
    with torch.no_grad(): sl.values.mul_(2.0)
    check("values.mul_(2)")
    with torch.no_grad(): sl.values.data.copy_(sl.values.data * -0.5)
    check(".data.copy_(-0.5x)")
    sd = {k: (v * 3 if k == "values" else v) for k, v in sl.state_dict().items()}
    sl.load_state_dict(sd)
    check("load_state_dict(3x values)")
