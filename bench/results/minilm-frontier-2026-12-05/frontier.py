import copy, sys, time, torch
from sparsekern import prune
from sparsekern.models.minilm import load_minilm, embed, embedding_quality
from sparsekern.demo.minilm_job import text_data, linear_names, FFN, ATTENTION
import os; torch.set_num_threads(int(os.environ.get("TH", "2"))); torch.manual_seed(0)
model, tok = load_minilm()
d = text_data(tok, n_distill=2048)
names = linear_names(model, FFN + ATTENTION)
ref = embed(model, d.test)
val_ref = embed(model, d.val)
ratio = float(sys.argv[1]); steps = int(sys.argv[2]); lr = float(sys.argv[3])
layers = sys.argv[4].split(",") if len(sys.argv) > 4 and sys.argv[4] else []
m = copy.deepcopy(model)
t0 = time.time()
prune.prune_model(m, {n: ratio for n in names}, "fine", criterion="sparsegpt", calib=d.final_calib)
q = embedding_quality(ref, embed(m, d.test))
print(f"ratio {ratio} one-shot {q} ({time.time()-t0:.0f}s)", flush=True)
def ev(mm):
    return embedding_quality(val_ref, embed(mm, d.val))["mean_cosine"]
hist = []
t0 = time.time()
curve = prune.distill(m, model, d.train, steps=steps, lr=lr, loss="cosine", progress=False,
                      layers=layers, eval_fn=ev, eval_every=max(1, steps // 6), history=hist)
q = embedding_quality(ref, embed(m, d.test))
print(f"ratio {ratio} steps {steps} lr {lr} layers {len(layers)} -> {q} ({time.time()-t0:.0f}s) hist {[(s, round(v,4)) for s, v in hist]}", flush=True)
