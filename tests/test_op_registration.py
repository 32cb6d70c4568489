"""One op definition: every schema of the sparsekern namespace is defined once, in
sparsekern/_ops.py; C++ and Triton files register kernels only. Also: the one autograd
formula (C++ node when _C is built, double backward through the helper ops), the pure-Python
fallback formula, the environment switches read once, and the abi3 build of _C.

Per-call overhead figures (in sparsekern/ops.py beside the formula) come from
``flock /work/wt/timing.lock env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE
PYTHONPATH=. python /work/wt/overhead.py <label>`` alternated with the tree before the change.
"""
import os
import pathlib
import re
import subprocess
import sys
import threading
import warnings

import pytest
import torch

import sparsekern as sk
from sparsekern import _extension, _ops

ROOT = pathlib.Path(__file__).resolve().parents[1]
HAVE_C = _extension._C is not None
needs_c = pytest.mark.skipif(not HAVE_C, reason="sparsekern._C is not built")

#: What defines a schema (C++ and Python spellings).
_DEFINES = re.compile(r"TORCH_LIBRARY\s*\(|TORCH_LIBRARY_FRAGMENT\s*\(|\bm\.def\s*\(|"
                      r"library\.define\s*\(|\bcustom_op\s*\(|\btriton_op\s*\(|"
                      r"\bLibrary\s*\(\s*[\"']sparsekern")


def _sources():
    for pattern in ("csrc/**/*.cpp", "csrc/**/*.cu", "csrc/**/*.h", "csrc/**/*.cuh",
                    "sparsekern/**/*.py"):
        yield from ROOT.glob(pattern)


def test_no_schema_is_defined_outside_ops_module():
    offenders = []
    for path in _sources():
        if path == ROOT / "sparsekern" / "_ops.py":
            continue
        for n, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
            code = line.split("//")[0] if path.suffix != ".py" else line.split("#")[0]
            if _DEFINES.search(code):
                offenders.append(f"{path.relative_to(ROOT)}:{n}: {line.strip()}")
    assert not offenders, "schemas defined outside sparsekern/_ops.py:\n" + "\n".join(offenders)


def test_the_pattern_finds_definitions():
    """The scan above would see each spelling of a definition (it cannot pass vacuously)."""
    for line in ('TORCH_LIBRARY_FRAGMENT(sparsekern, m) {', '  m.def("x() -> ()");',
                 'torch.library.define("sparsekern::x", "() -> ()")',
                 '@triton_op("sparsekern::_x", mutates_args={"out"})',
                 '@torch.library.custom_op("sparsekern::x", mutates_args=())'):
        assert _DEFINES.search(line), line


def test_every_registered_op_has_its_schema_in_ops_module():
    """The dispatcher's sparsekern ops (Triton's included) are exactly _ops.SCHEMAS, each
    with the schema written there."""
    try:
        import sparsekern.triton  # noqa: F401  (registers its kernels, defines nothing)
    except ImportError:
        pass
    names = {n.split("::", 1)[1] for n in torch._C._dispatch_get_all_op_names()
             if n.startswith("sparsekern::")}
    assert names == set(_ops.SCHEMAS)
    for name, schema in _ops.SCHEMAS.items():
        op = getattr(torch.ops.sparsekern, name).default
        expected = torch._C.parse_schema(f"sparsekern::{name}{schema}")
        assert str(op._schema) == str(expected), name


@needs_c
def test_compiled_kernels_are_registered_for_their_keys():
    has = torch._C._dispatch_has_kernel_for_dispatch_key
    assert has("sparsekern::spmm", "CPU")
    # One autograd formula (the C++ node), registered for the Autograd alias key: it is the
    # kernel AutogradCPU and AutogradCUDA compute to.
    assert has("sparsekern::spmm", "Autograd")
    computed = torch._C._dispatch_has_computed_kernel_for_dispatch_key
    assert computed("sparsekern::spmm", "AutogradCPU")
    assert computed("sparsekern::spmm", "AutogradCUDA")
    for name in ("_spmm_cpu", "_spmm_transposed_cpu", "_sampled_dot_cpu"):
        assert has(f"sparsekern::{name}", "CPU"), name
    for name in ("_abi_version", "_kernel_exists", "_cpu_isa", "_csc_cache_info",
                 "_python_path", "_reload_env"):
        assert has(f"sparsekern::{name}", "CompositeExplicitAutograd"), name


@needs_c
def test_extension_is_one_abi3_file():
    assert _extension._C.__file__.endswith(".abi3.so"), _extension._C.__file__
    assert not hasattr(_extension._C.module, "abi_version")  # no pybind11 functions
    assert _extension._C.abi_version() == _extension.ABI_VERSION


@needs_c
def test_kernel_exists_takes_dtypes_or_names_and_rejects_others():
    C = _extension._C
    assert C.kernel_exists("csc", torch.float32, torch.float32)
    assert C.kernel_exists("csc", "bfloat16", "float32")
    assert not C.kernel_exists("csc", torch.float64, torch.float64)
    assert not C.kernel_exists("nope", torch.float32, torch.float32)
    with pytest.raises(ValueError, match=r"dtype must be a torch.dtype or its name.*'floaty'"):
        C.kernel_exists("csc", "floaty", torch.float32)


def test_stale_pre_abi3_build_is_not_loaded(tmp_path, monkeypatch):
    """A `_C.cpython-*.so` from before the abi3 build would abort the process on import (its
    own definitions clash with _ops): it is reported stale without being loaded."""
    pkg = tmp_path / "oldpkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "_C.cpython-311-x86_64-linux-gnu.so").write_bytes(b"not a library")
    monkeypatch.syspath_prepend(str(tmp_path))
    mod, why = _extension.try_load("oldpkg._C")
    assert mod is None and "is stale" in why and "predates the abi3 build" in why
    # With an abi3 build beside it, the abi3 file is the one considered: one without the ABI
    # marker (built before it) is stale and never loaded; one with the marker is loaded
    # (here: a broken one).
    (pkg / "_C.abi3.so").write_bytes(b"not a library either")
    mod, why = _extension.try_load("oldpkg._C")
    assert mod is None and "is stale" in why and "no ABI marker" in why
    marker = f"sparsekern-abi-version={_extension.ABI_VERSION};".encode()
    (pkg / "_C.abi3.so").write_bytes(b"not a library, " + marker)
    mod, why = _extension.try_load("oldpkg._C")
    assert mod is None and "could not be imported" in why and "_C.abi3.so" in why


def test_a_build_of_another_abi_is_never_loaded(tmp_path, monkeypatch):
    """Loading registers a build's kernels; a stale one whose op signatures changed made
    `import sparsekern` raise (its kernel clashed with the new schema). The ABI is read from
    the file's bytes first."""
    pkg = tmp_path / "abipkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    so = pkg / "_C.abi3.so"
    so.write_bytes(b"\x7fELF..." + f"sparsekern-abi-version={_extension.ABI_VERSION - 1};".encode())
    monkeypatch.syspath_prepend(str(tmp_path))
    mod, why = _extension.try_load("abipkg._C")
    assert mod is None and f"was built with ABI {_extension.ABI_VERSION - 1}" in why
    assert f"expects ABI {_extension.ABI_VERSION}" in why and "abipkg._C" not in __import__(
        "sys").modules
    assert _extension.file_abi(str(so)) == _extension.ABI_VERSION - 1
    assert _extension.file_abi(_extension._C.__file__) == _extension.ABI_VERSION  # this build
    assert _extension.file_abi(str(tmp_path / "missing.so")) is None


def _csc(M=6, K=5, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    W = torch.randn(M, K, generator=g, dtype=dtype) * (torch.rand(M, K, generator=g) < 0.6)
    return sk.to_sparse(W, layout="csc")


def test_double_backward_matches_gradgradcheck():
    A = _csc()
    values = A.values.clone().requires_grad_()
    B = torch.randn(5, 3, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(6, dtype=torch.float64, requires_grad=True)
    fmt = (A.indices, A.offsets, 6, 5, "csc")

    def f(v, b, c):
        return torch.ops.sparsekern.spmm(v, *fmt, b, c)

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # e.g. "no autograd kernel" for a helper op
        assert torch.autograd.gradcheck(f, (values, B, bias))
        assert torch.autograd.gradgradcheck(f, (values, B, bias))


@needs_c
def test_double_backward_through_compiled_kernels_matches_dense():
    """float32 on the C++ kernels: second derivatives equal dense autograd's."""
    torch.manual_seed(1)
    W = torch.randn(12, 10) * (torch.rand(12, 10) < 0.5)
    A = sk.to_sparse(W, layout="csc")
    mask = torch.zeros(12, 10, dtype=torch.bool)
    rows, cols, _ = sk.backends.reference.coordinates(A.values, A.indices, A.offsets, 12, 10,
                                                      "csc")
    mask[rows, cols] = True
    x = torch.randn(10, 4, requires_grad=True)
    v = A.values.clone().requires_grad_()
    y = torch.ops.sparsekern.spmm(v, A.indices, A.offsets, 12, 10, "csc", x)
    gx, = torch.autograd.grad((y ** 2).sum(), x, create_graph=True)
    gv, = torch.autograd.grad(gx.pow(2).sum(), v)
    Wd = W.clone().requires_grad_()
    xd = x.detach().clone().requires_grad_()
    gxd, = torch.autograd.grad(((Wd @ xd) ** 2).sum(), xd, create_graph=True)
    gWd, = torch.autograd.grad(gxd.pow(2).sum(), Wd)
    torch.testing.assert_close(gx, gxd, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(gv, gWd[rows, cols], rtol=1e-4, atol=1e-3)


_NO_C_SCRIPT = r"""
import sys, warnings
sys.modules["sparsekern._C"] = None          # as if _C had never been built
warnings.simplefilter("ignore")
import torch, sparsekern as sk
assert sk._extension._C is None
torch.manual_seed(0)
W = torch.randn(6, 5, dtype=torch.float64) * (torch.rand(6, 5) < 0.6)
A = sk.to_sparse(W, layout="csc")
v = A.values.clone().requires_grad_()
B = torch.randn(5, 3, dtype=torch.float64, requires_grad=True)
b = torch.randn(6, dtype=torch.float64, requires_grad=True)
f = lambda v, B, b: torch.ops.sparsekern.spmm(v, A.indices, A.offsets, 6, 5, "csc", B, b)
assert torch.autograd.gradcheck(f, (v, B, b))
assert torch.autograd.gradgradcheck(f, (v, B, b))
# its Autograd kernel refuses a tangent (register_autograd's dropped it: a zero JVP)
try:
    torch.func.jvp(lambda B: f(v.detach(), B, None), (B.detach(),), (torch.ones_like(B),))
    raise SystemExit("a tangent through the raw op did not raise")
except RuntimeError as e:
    assert "no forward-mode AD formula" in str(e), e
_, t = torch.func.jvp(lambda B: sk.spmm(A, B), (B.detach(),), (torch.ones_like(B),))
torch.testing.assert_close(t, W @ torch.ones_like(B))
print("python formula ok")
"""


def test_python_formula_serves_a_build_without_extension():
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    r = subprocess.run([sys.executable, "-c", _NO_C_SCRIPT], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and "python formula ok" in r.stdout, r.stderr[-3000:]


@needs_c
def test_cpu_isa_is_read_once_and_on_reload(cpu_isa_env):
    best = _extension._C.cpu_isa()
    os.environ["SPARSEKERN_CPU_ISA"] = "portable"  # no reload: not seen
    try:
        assert _extension._C.cpu_isa() == best
        A = _csc(dtype=torch.float32)
        torch.ops.sparsekern.spmm(*A.op_args(), torch.ones(5, 2))  # no error, no re-read
    finally:
        del os.environ["SPARSEKERN_CPU_ISA"]
    cpu_isa_env("portable")
    assert _extension._C.cpu_isa() == "portable"
    cpu_isa_env("sse9")  # a bad value is reported at the next call, not at reload
    with pytest.raises(ValueError, match=r"SPARSEKERN_CPU_ISA='sse9' is not a CPU instruction"):
        torch.ops.sparsekern.spmm(*_csc(dtype=torch.float32).op_args(), torch.ones(5, 2))
    cpu_isa_env(None)
    assert _extension._C.cpu_isa() == best


@needs_c
@pytest.mark.skipif(HAVE_C and _extension._C.cpu_has_avx2(), reason="this CPU has AVX2")
def test_forcing_a_missing_avx2_is_an_error(cpu_isa_env):
    cpu_isa_env("avx2")
    with pytest.raises(ValueError, match=r"SPARSEKERN_CPU_ISA='avx2' but this CPU lacks AVX2"):
        torch.ops.sparsekern.spmm(*_csc(dtype=torch.float32).op_args(), torch.ones(5, 2))


@needs_c
def test_use_backend_steers_only_its_own_thread():
    depth = {}

    def other():
        depth["other"] = torch.ops.sparsekern._python_path(0)

    with sk.backends.use_backend("reference"):
        depth["here"] = torch.ops.sparsekern._python_path(0)
        t = threading.Thread(target=other)
        t.start()
        t.join()
    assert depth == {"here": 1, "other": 0}
    assert torch.ops.sparsekern._python_path(0) == 0


@needs_c
def test_compiled_forward_and_backward_match_eager():
    """torch.compile(fullgraph=True) through the C++ autograd node."""
    torch.manual_seed(2)
    A = _csc(M=8, K=6, dtype=torch.float32)
    v = A.values.clone().requires_grad_()
    fmt = (A.indices, A.offsets, 8, 6, "csc")

    def f(v, x):
        return torch.ops.sparsekern.spmm(v, *fmt, x).square().sum()

    x = torch.randn(6, 3, requires_grad=True)
    torch._dynamo.reset()
    out = torch.compile(f, fullgraph=True)(v, x)
    gv, gx = torch.autograd.grad(out, (v, x))
    ev, ex = torch.autograd.grad(f(v, x), (v, x))
    torch.testing.assert_close(gv, ev)
    torch.testing.assert_close(gx, ex)
