import time, statistics, torch, copy
torch.set_num_threads(2)
torch.manual_seed(0)
lin = torch.nn.Linear(384, 1536); x = torch.randn(17, 384)
copies = [copy.deepcopy(lin) for _ in range(40)]  # 94 MB
b48 = torch.ones(12 << 20); b96 = torch.ones(24 << 20); b4 = torch.ones(1 << 20)
st = [0]
def rotcall():
    st[0] = (st[0] + 1) % len(copies); return copies[st[0]](x)
def t(pre, fn=lambda: lin(x), n=150):
    ts = []
    with torch.inference_mode():
        for _ in range(n):
            pre()
            t0 = time.perf_counter(); fn(); ts.append(time.perf_counter() - t0)
    return statistics.median(ts) * 1e6
cases = {"warm": (lambda: None, None), "read4": (lambda: b4.sum(), None), "read48": (lambda: b48.sum(), None),
         "read96": (lambda: b96.sum(), None), "fill48": (lambda: (b48.fill_(1.0), b48.sum()), None),
         "rot94": (lambda: None, rotcall), "rot94+read4": (lambda: b4.sum(), rotcall)}
for r in range(3):
    print(" ".join(f"{k}={t(p, f) if f else t(p):.0f}" for k, (p, f) in cases.items()), flush=True)
