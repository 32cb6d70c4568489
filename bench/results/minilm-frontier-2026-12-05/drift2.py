"""Does the recovery step slow the dense model afterwards? Time the dense MiniLM at 1 sentence
(warm, back to back) before and after a distillation phase, then after candidate remedies."""
import copy, ctypes, gc, sys, time, statistics, torch
from sparsekern import prune
from sparsekern.models.minilm import load_minilm, tokenize
from sparsekern.auto.measure import time_jobs
from sparsekern.auto.signature import call
from sparsekern.demo.minilm_job import JOB_TIMER, text_data
torch.set_num_threads(2)
model, tok = load_minilm(); model.eval()
d = text_data(tok)
x = d.examples[0]
def iso(tag):
    r = []
    for _ in range(5):
        r.append(time_jobs({"dense": (lambda y: call(model, y), x)}, torch.device("cpu"), JOB_TIMER, "warm")["dense"]["median_s"] * 1e3)
    print(f"{tag:28s} dense 1 sentence: median {statistics.median(r):.3f} ms, range {min(r):.3f}-{max(r):.3f}", flush=True)
iso("before")
student = copy.deepcopy(model)
prune.prune_model(student, 0.5, "fine", criterion="l1")
iso("after prune")
steps = int(sys.argv[1]) if len(sys.argv) > 1 else 64
t0 = time.time()
prune.distill(student, model, d.train, steps=steps, lr=1e-4, loss="cosine", progress=False)
print(f"distill {steps} steps {time.time()-t0:.1f}s", flush=True)
iso("after distill")
time.sleep(5)
iso("after 5 s sleep")
gc.collect(); iso("after gc.collect")
ctypes.CDLL("libc.so.6").malloc_trim(0); iso("after malloc_trim")
print("grad enabled:", torch.is_grad_enabled(), "threads", torch.get_num_threads(), "interop", torch.get_num_interop_threads())
torch.set_num_threads(2); iso("after set_num_threads(2)")
del student; gc.collect(); ctypes.CDLL("libc.so.6").malloc_trim(0); iso("after del student")
for i in range(4):
    iso(f"again {i}")
