"""Importing sparsekern without a usable _C warns once and the reference backend serves."""
import warnings

import pytest
import torch

import sparsekern as sk
from sparsekern import _extension


def test_extension_is_loaded_here():
    assert _extension._C is not None, _extension.unavailable_reason()
    assert hasattr(torch.ops.sparsekern, "spmm")


def test_missing_extension_reason():
    mod, why = _extension.try_load("sparsekern._no_such_extension")
    assert mod is None and "is not built" in why


def test_stale_extension_reason():
    mod, why = _extension.try_load(expected_abi=_extension.ABI_VERSION + 1000)
    assert mod is None and "is stale" in why


def test_broken_extension_reason(tmp_path, monkeypatch):
    (tmp_path / "broken_ext.py").write_text("raise OSError('undefined symbol: foo')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    mod, why = _extension.try_load("broken_ext")
    assert mod is None and "could not be imported (OSError: undefined symbol: foo)" in why


def test_warns_once_and_reference_serves(monkeypatch):
    from sparsekern import ops
    monkeypatch.setattr(_extension, "_C", None)
    monkeypatch.setattr(_extension, "_reason", "sparsekern._C is not built (test)")
    monkeypatch.setattr(_extension, "_warned", False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert _extension.extension() is None
        assert _extension.extension() is None
    msgs = [str(w.message) for w in caught]
    assert len(msgs) == 1 and "compiled kernels unavailable" in msgs[0] and "(test)" in msgs[0]
    assert not sk.backends.get_backend("cpu").available()[0]
    W = torch.zeros(4, 8)
    W[1, 2] = 3.0
    A = sk.to_sparse(W, "csc")
    # The Python path (what serves CPU calls when _C is missing) falls back to reference.
    out = ops._spmm_impl(*A.op_args(), torch.ones(8, 1))
    assert out[1, 0].item() == 3.0


def test_subpackages_load_on_first_use():
    """``import sparsekern as sk`` then ``sk.prune.prune_model`` (it raised AttributeError
    until ``sparsekern.prune`` was imported); the import itself does not load them."""
    import subprocess
    import sys
    code = ("import sys, sparsekern as sk\n"
            "assert 'sparsekern.prune' not in sys.modules\n"
            "assert callable(sk.prune.prune_model) and 'sparsekern.prune' in sys.modules\n"
            "assert callable(sk.auto.build_table)\n"
            "try:\n    sk.no_such_thing\nexcept AttributeError as e:\n"
            "    assert \"has no attribute 'no_such_thing'\" in str(e)\n"
            "else:\n    raise SystemExit('no AttributeError')\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
