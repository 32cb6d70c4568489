"""setup.py links _C against the libstdc++ torch loaded when the C++ compiler would copy a
static one into it (the CUDA machine's toolchain did: the first number printed into an error
message then crashed the process, SIGSEGV in std::ostream::_M_insert<long>)."""
import os
import shutil
import stat
import subprocess

import pytest
import torch

import sparsekern
from sparsekern import _extension

GXX = shutil.which("g++")


@pytest.fixture
def setup_mod(setup_py):
    return setup_py


@pytest.mark.skipif(GXX is None, reason="no g++ on PATH to build the probe with")
def test_a_static_libstdcxx_toolchain_gets_the_loaded_shared_one(setup_mod, tmp_path):
    loaded = setup_mod._loaded_libstdcxx()
    assert loaded is not None and "libstdc++.so" in loaded and os.path.exists(loaded)
    assert setup_mod.libstdcxx_link_args(GXX) == []          # a usual toolchain: nothing added
    static = tmp_path / "static-g++"
    static.write_text(f'#!/bin/sh\nexec {GXX} -static-libstdc++ "$@"\n')
    static.chmod(static.stat().st_mode | stat.S_IEXEC)
    assert setup_mod._links_libstdcxx_shared(str(static)) is False
    assert setup_mod.libstdcxx_link_args(str(static)) == [loaded]


def test_an_unusable_compiler_changes_nothing(setup_mod, tmp_path):
    assert setup_mod.libstdcxx_link_args(str(tmp_path / "no-such-compiler")) == []


@pytest.mark.skipif(_extension._C is None or shutil.which("nm") is None,
                    reason="needs the built extension and binutils' nm")
def test_the_built_extension_carries_no_libstdcxx_copy():
    out = subprocess.run(["nm", "-D", "--defined-only", _extension._C.__file__],
                         capture_output=True, text=True, check=True).stdout
    assert "_ZNSo9_M_insertIlEERSoT_" not in out, "_C defines std::ostream::_M_insert<long>"


def test_a_size_in_a_cpp_error_message_is_printed():
    # The crash's trigger: a TORCH_CHECK message printing an int64 (sizes, M, K).
    if _extension._C is None:
        pytest.skip("the C++ extension is not built")
    with pytest.raises(RuntimeError, match=r"M=4, K=8"):
        torch.ops.sparsekern._spmm_cpu(torch.zeros(3, 5), torch.zeros(1, dtype=torch.int32),
                                       torch.zeros(1, dtype=torch.int32), 4, 8, "bsr",
                                       torch.zeros(8, 2), None, torch.zeros(4, 2))
    assert sparsekern is not None
