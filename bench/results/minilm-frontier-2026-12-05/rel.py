import copy, sys, time, os, torch, math
import torch.nn.functional as F
from sparsekern import prune
from sparsekern.models.minilm import load_minilm, embed, embedding_quality
from sparsekern.demo.minilm_job import text_data, linear_names, FFN, ATTENTION
torch.set_num_threads(int(os.environ.get("TH", "1"))); torch.manual_seed(0)
model, tok = load_minilm()
d = text_data(tok, n_distill=2048)
names = linear_names(model, FFN + ATTENTION)
ref = embed(model, d.test); val_ref = embed(model, d.val)
anchors = embed(model, d.train)  # teacher embeddings of the distillation sentences
ratio, steps, lr, lam, tau = float(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4]), float(sys.argv[5])
m = copy.deepcopy(model)
prune.prune_model(m, {n: ratio for n in names}, "fine", criterion="sparsegpt", calib=d.final_calib)
masks = {n: (dict(m.named_modules())[n].weight != 0) for n in names}
mods = dict(m.named_modules())
opt = torch.optim.AdamW([p for p in m.parameters()], lr=lr, weight_decay=0)
sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * s / steps)))
t0 = time.time(); hist = []
for step in range(steps):
    b = d.train[step % len(d.train)]
    with torch.no_grad():
        t = model(**b)
    s = m(**b)
    loss = (1 - F.cosine_similarity(s, t, dim=-1)).mean()
    if lam > 0:
        lt = F.log_softmax(t @ anchors.T / tau, -1); ls = F.log_softmax(s @ anchors.T / tau, -1)
        loss = loss + lam * F.kl_div(ls, lt, log_target=True, reduction="batchmean")
    opt.zero_grad(); loss.backward(); torch.nn.utils.clip_grad_norm_(m.parameters(), 1.0); opt.step(); sched.step()
    with torch.no_grad():
        for n in names: mods[n].weight.mul_(masks[n])
    if (step + 1) % 100 == 0:
        q = embedding_quality(val_ref, embed(m, d.val)); hist.append((step + 1, round(q["mean_cosine"], 4), round(q["top1_agreement"], 3)))
q = embedding_quality(ref, embed(m, d.test))
print(f"ratio {ratio} steps {steps} lr {lr} lam {lam} tau {tau} -> {q} ({time.time()-t0:.0f}s) val {hist}", flush=True)
