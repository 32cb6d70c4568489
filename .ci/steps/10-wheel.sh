# The wheel: `pip wheel --no-build-isolation .` builds one that installs into a fresh
# virtual environment (torch installed first) and imports with its compiled kernels.
set -euo pipefail
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
pip wheel --no-build-isolation --no-deps -w "$WORK/dist" . > "$WORK/wheel.log" 2>&1 || {
  tail -50 "$WORK/wheel.log"; exit 1; }
python3 -m venv "$WORK/venv"
"$WORK/venv/bin/pip" install -q torch==2.13.0
"$WORK/venv/bin/pip" install -q "$WORK"/dist/sparsekern-*.whl
cd "$WORK"
"$WORK/venv/bin/python" - <<'PY'
import warnings
warnings.simplefilter("error")  # a missing or stale _C would warn: fail instead
import torch, sparsekern as sk
print(torch.ops.sparsekern.spmm)
assert sk._extension._C is not None
W = torch.zeros(4, 8); W[1, 2] = 3.0
assert sk.spmm(sk.to_sparse(W, "csc"), torch.ones(8, 1))[1, 0].item() == 3.0
print("wheel installs and imports:", sk.__file__)
PY
