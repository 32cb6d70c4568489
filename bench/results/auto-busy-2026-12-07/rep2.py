import sys, copy, torch, warnings, time, collections
sys.path.insert(0, __import__("os").path.join(__import__("os").path.dirname(__file__), "../../.."))
import sparsekern as sk
from sparsekern.models.minilm import load_minilm
from sparsekern import prune
base, tok = load_minilm()
def batch(B, T):
    gg = torch.Generator().manual_seed(B * 1000 + T)
    return {"input_ids": torch.randint(1000, 20000, (B, T), generator=gg), "attention_mask": torch.ones(B, T, dtype=torch.long)}
calib = [batch(8, 32)]
for nm, kw in [("90%", dict(ratio=0.9, granularity="fine", criterion="wanda", calib=calib)), ("2:4", dict(granularity="2:4", criterion="l1"))]:
    m = copy.deepcopy(base); prune.prune_model(m, **kw)
    warnings.simplefilter("ignore")
    t=time.time()
    sp = sk.sparsify(m, layout="auto", example_input=[batch(1,16), batch(8,48)])
    ch = collections.Counter(v[0] for v in sp.sparsekern_report.values())
    print(nm, f"{time.time()-t:.1f}s", dict(ch), {k: len(v) for k, v in sp.sparsekern_entries.items()})
