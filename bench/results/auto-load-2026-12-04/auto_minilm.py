import torch, time, sys, logging, tempfile, os, collections
os.environ["SPARSEKERN_CACHE"] = tempfile.mkdtemp()
import sparsekern as sk
from sparsekern import prune
from sparsekern.models.minilm import load_minilm
enc, tok = load_minilm()
enc.eval()
batch = tok(["The quick brown fox jumps over the lazy dog."] * 1, return_tensors="pt")
mode = sys.argv[1]
if mode == "fine50":
    prune.prune_model(enc, 0.5, "fine")
else:
    prune.prune_model(enc, 0.9, "fine")
logging.basicConfig(level=logging.WARNING)
t = time.time()
sk.sparsify(enc, layout="auto", example_input=dict(batch))
print("sparsify auto %.1fs" % (time.time() - t))
c = collections.Counter(v[0] for v in enc.sparsekern_report.values())
print(c)
for n, (f, why) in list(enc.sparsekern_report.items())[:3]: print(n, f, why[:200])
print("cache files:", sum(len(fs) for _, _, fs in os.walk(os.environ["SPARSEKERN_CACHE"])))


import collections
print(collections.Counter((d.format, d.reason[:90]) for d in enc.sparsekern_decisions.values()).most_common(4))
