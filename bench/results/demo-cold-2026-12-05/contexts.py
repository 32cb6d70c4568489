import sys, statistics, time, copy, torch
from sparsekern.models.minilm import load_minilm, tokenize
from sparsekern.models.text import text_splits
from sparsekern.auto.measure import time_jobs
from sparsekern.auto.table import stubbed_copy
from sparsekern.auto.signature import call
from sparsekern.demo.minilm_job import JOB_TIMER
torch.set_num_threads(2)
model, tok = load_minilm(); model.eval()
sents = text_splits()[0] if False else None
x = tokenize(tok, ["The quick brown fox jumps over the lazy dog near the river bank today."])[0]
names = [n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)]
inputs = {}
hs = [model.get_submodule(n).register_forward_hook(lambda m, a, o, n=n: (inputs.setdefault(n, a[0].detach().clone()), None)[1]) for n in names]
with torch.inference_mode(): call(model, x)
for h in hs: h.remove()
other = stubbed_copy(model, x, names)
jobs = {"model": (lambda x: call(model, x), x), "other": (lambda x: call(other, x), x)}
for n in names: jobs["L:" + n] = (model.get_submodule(n), inputs[n])
# rotation: copies of each layer shape exceeding 48MB, run in a cycle (one call per sample)
def rot(layer, xin, total=48 << 20):
    nb = sum(p.numel() * 4 for p in layer.parameters())
    k = max(2, -(-total // nb))
    cs = [copy.deepcopy(layer) for _ in range(k)]
    st = {"i": 0}
    def f(x):
        st["i"] = (st["i"] + 1) % k
        return cs[st["i"]](x)
    return f
res = {}
for ctx in sys.argv[1:]:
    if ctx == "rot":
        rj = {"model": jobs["model"], "other": jobs["other"]}
        for n in names: rj["L:" + n] = (rot(model.get_submodule(n), inputs[n]), inputs[n])
        r = time_jobs(rj, torch.device("cpu"), JOB_TIMER, "warm")
    else:
        r = time_jobs(jobs, torch.device("cpu"), JOB_TIMER, ctx)
    lay = sum(v["median_s"] for k, v in r.items() if k.startswith("L:"))
    print(f"{ctx:5s} model {r['model']['median_s']*1e3:.3f} ms  other {r['other']['median_s']*1e3:.3f}  layers {lay*1e3:.3f}  pred {1e3*(lay+r['other']['median_s']):.3f}  q {1e3*r['L:'+names[0]]['median_s']:.3f} ffn1 {1e3*r['L:'+names[4]]['median_s']:.3f} inner {r['L:'+names[4]].get('inner')}", flush=True)
from sparsekern.timing import timers
import sparsekern.auto.measure as M
M._FLUSHERS.clear()
_init = timers.CacheFlusher.__init__
def init(self, nbytes=None):
    _init(self, nbytes); self.buffer.fill_(1.0)
timers.CacheFlusher.__init__ = init
timers.CacheFlusher.__call__ = lambda self, fn=None, arg=None: self.buffer.sum()
for rep in range(2):
    w = time_jobs({"model": jobs["model"], "other": jobs["other"]}, torch.device("cpu"), JOB_TIMER, "warm")
    for ctx in ("llc", "cold"):
        r = time_jobs(jobs, torch.device("cpu"), JOB_TIMER, ctx)
        lay = sum(v["median_s"] for k, v in r.items() if k.startswith("L:"))
        print(f"{ctx}-clean model(warm) {w['model']['median_s']*1e3:.3f} ms other(warm) {w['other']['median_s']*1e3:.3f} layers {lay*1e3:.3f} pred {1e3*(lay+w['other']['median_s']):.3f} | model({ctx}) {r['model']['median_s']*1e3:.3f} other {r['other']['median_s']*1e3:.3f} q {1e3*r['L:'+names[0]]['median_s']:.3f} ffn1 {1e3*r['L:'+names[4]]['median_s']:.3f}", flush=True)
