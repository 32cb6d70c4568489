"""Build of sparsekern._C.

The C++ CPU kernels (csrc/ops.cpp, csrc/cpu/*.cpp) are always built with torch's
CppExtension (C++17, -O3, OpenMP). CUDA sources (csrc/cuda/*.cu + their glue) are added only
when torch reports CUDA and nvcc is found. Environment switches:
    SPARSEKERN_CUDA=0|1|auto   force the CUDA part off / on (on fails without nvcc)
    SPARSEKERN_SANITIZE=1      build with AddressSanitizer + UBSan (for the sanitizer job)
    SPARSEKERN_NO_EXTENSION=1  build no extension (pure Python; the reference backend serves)
    TORCH_CUDA_ARCH_LIST       CUDA targets, e.g. "9.0a" (an H100/H200 only: the fastest build)
                               or "8.0;9.0a+PTX"; default "8.0+PTX;9.0a" (see cuda_arch_flags)
Build with `pip install --no-build-isolation .` so the installed torch is the one used.

`_C` uses only Python's stable ABI (Py_LIMITED_API, py_limited_api=True): it holds torch ops
and an empty module, no pybind11, so one `_C.abi3.so` (wheel tag cp310-abi3) serves every
Python >= 3.10 built against the same torch.
"""
import glob
import os
import re
import shutil
import subprocess
import sys
import tempfile

from setuptools import setup

ROOT = os.path.dirname(os.path.abspath(__file__))
#: The oldest Python the abi3 build serves (pyproject's requires-python), as Py_LIMITED_API.
LIMITED_API = ("Py_LIMITED_API", "0x030A0000")
ABI3_TAG = "cp310"


def _rel(paths):
    return sorted(os.path.relpath(p, ROOT) for p in paths)


def _want_cuda(torch_mod, cuda_home) -> bool:
    switch = os.environ.get("SPARSEKERN_CUDA", "auto").strip().lower()
    has_nvcc = bool(cuda_home) and (shutil.which("nvcc") is not None or
                                    os.path.exists(os.path.join(cuda_home, "bin", "nvcc")))
    available = torch_mod.version.cuda is not None and has_nvcc
    if switch in ("0", "off", "false", "no"):
        return False
    if switch in ("1", "on", "true", "yes"):
        if not available:
            raise RuntimeError("SPARSEKERN_CUDA=1 but torch has no CUDA or nvcc was not found "
                               f"(torch.version.cuda={torch_mod.version.cuda}, CUDA_HOME={cuda_home})")
        return True
    return available


#: Default CUDA targets: machine code for sm_80 (A100, and what sm_86/89 run) and sm_90a
#: (H100/H200), plus compute_80 PTX that the driver compiles for any newer GPU.
DEFAULT_CUDA_ARCHS = "8.0+PTX;9.0a"
#: Names TORCH_CUDA_ARCH_LIST may use instead of numbers (as torch's own parser accepts).
_ARCH_NAMES = {"ampere": "8.0;8.6", "ada": "8.9", "hopper": "9.0a"}


def cuda_arch_flags(arch_list=None):
    """nvcc -gencode flags for a TORCH_CUDA_ARCH_LIST string (None: the variable or default).

    Entries are separated by ';', ',' or spaces: "X.Y" (machine code for sm_XY), "X.Ya"
    (arch-specific, e.g. 9.0a), either with "+PTX" to embed that PTX too, or a name from
    _ARCH_NAMES. The kernels need sm_80 or newer (mma.sp with bf16, cp.async, ldmatrix).
    """
    if arch_list is None:
        arch_list = os.environ.get("TORCH_CUDA_ARCH_LIST", "").strip() or DEFAULT_CUDA_ARCHS
    entries = [e for e in re.split(r"[;,\s]+", arch_list.strip()) if e]
    expanded = []
    for e in entries:
        expanded += re.split(r"[;]", _ARCH_NAMES[e.lower()]) if e.lower() in _ARCH_NAMES else [e]
    flags = []
    for e in expanded:
        m = re.fullmatch(r"(\d+)\.(\d+)([af]?)(\+PTX)?", e, flags=re.IGNORECASE)
        if m is None:
            raise ValueError(f"TORCH_CUDA_ARCH_LIST entry {e!r} is not X.Y, X.Ya or X.Y+PTX "
                             f"(nor one of {sorted(_ARCH_NAMES)}); got {arch_list!r}")
        major, minor, suffix, ptx = int(m.group(1)), m.group(2), m.group(3).lower(), m.group(4)
        if major < 8:
            raise ValueError(f"TORCH_CUDA_ARCH_LIST entry {e!r}: the CUDA kernels need compute "
                             f"capability 8.0 or newer (mma.sp with bf16, cp.async)")
        arch = f"{major}{minor}{suffix}"
        flags.append(f"-gencode=arch=compute_{arch},code=sm_{arch}")
        if ptx:
            flags.append(f"-gencode=arch=compute_{arch},code=compute_{arch}")
    if not flags:
        raise ValueError(f"TORCH_CUDA_ARCH_LIST={arch_list!r} names no architecture")
    return list(dict.fromkeys(flags))


_PROBE_CPP = "#include <sstream>\nstd::string f(long v) { std::ostringstream o; o << v; return o.str(); }\n"


def _loaded_libstdcxx():
    """Path of the libstdc++ this process (with torch imported) has loaded, or None."""
    try:
        with open("/proc/self/maps") as f:
            paths = {line.split()[-1] for line in f if "libstdc++.so" in line}
    except OSError:
        return None
    return sorted(paths)[0] if paths else None


def _links_libstdcxx_shared(cxx: str) -> bool:
    """Does ``cxx -shared`` link libstdc++ as a shared library (NEEDED), as usual?"""
    with tempfile.TemporaryDirectory() as d:
        src, lib = os.path.join(d, "probe.cpp"), os.path.join(d, "probe.so")
        with open(src, "w") as f:
            f.write(_PROBE_CPP)
        try:
            subprocess.run([cxx, "-shared", "-fPIC", "-O1", src, "-o", lib], check=True,
                           capture_output=True, timeout=120)
            with open(lib, "rb") as f:
                return b"libstdc++.so" in f.read()  # the NEEDED entry's name in .dynstr
        except (OSError, subprocess.SubprocessError):
            return True  # cannot tell: link as usual


def libstdcxx_link_args(cxx=None):
    """Link arguments that make _C use the libstdc++ torch loaded, when the C++ compiler
    would otherwise copy a static libstdc++ into _C (a toolchain built that way is what the
    CUDA machine's compiler is). The copy's locale is never initialised: the first number an
    error message printed crashed the process (SIGSEGV in std::ostream::_M_insert<long>,
    reached from c10's operator<< of a tensor's sizes). Empty everywhere else."""
    if not sys.platform.startswith("linux"):
        return []
    loaded = _loaded_libstdcxx()
    if loaded is None:
        return []
    if cxx is None:
        from torch.utils import cpp_extension
        getter = getattr(cpp_extension, "get_cxx_compiler", None)
        cxx = getter() if getter else os.environ.get("CXX", "c++")
    return [] if _links_libstdcxx_shared(cxx) else [loaded]


def extensions():
    if os.environ.get("SPARSEKERN_NO_EXTENSION") == "1":
        return [], {}
    # torch derives CUDA_HOME from the nvcc on PATH; a wrapper in /usr/local/bin would make it
    # /usr/local, where the CUDA headers are not.
    if not os.environ.get("CUDA_HOME") and os.path.exists("/usr/local/cuda/bin/nvcc"):
        os.environ["CUDA_HOME"] = "/usr/local/cuda"
    import torch
    from torch.utils.cpp_extension import CUDA_HOME, BuildExtension, CppExtension, CUDAExtension

    sanitize = os.environ.get("SPARSEKERN_SANITIZE") == "1"
    opt = ["-O1", "-g", "-fno-omit-frame-pointer", "-fsanitize=address,undefined",
           "-fno-sanitize-recover=undefined"] if sanitize else ["-O3"]
    # torch >= 2.14's headers require C++20; older ones build with C++17.
    torch_version = tuple(int(p) for p in torch.__version__.split("+")[0].split(".")[:2])
    std = "-std=c++20" if torch_version >= (2, 14) else "-std=c++17"
    # Python's sysconfig flags (which setuptools passes first) carry -fwrapv; -fno-wrapv after
    # them makes signed overflow undefined again, so UBSan's signed-integer-overflow check
    # (in the sanitizer build) reports it instead of it wrapping silently.
    cxx = [std, "-fopenmp", "-Wall", "-Wno-unknown-pragmas", "-fno-wrapv"] + opt
    link = ["-fopenmp"] + (["-fsanitize=address,undefined"] if sanitize else []) + \
        libstdcxx_link_args()
    sources = _rel([os.path.join(ROOT, "csrc", "ops.cpp")] +
                   glob.glob(os.path.join(ROOT, "csrc", "cpu", "*.cpp")))
    include = [os.path.join(ROOT, "csrc")]
    if _want_cuda(torch, CUDA_HOME):
        sources += _rel(glob.glob(os.path.join(ROOT, "csrc", "cuda", "*.cu")) +
                        glob.glob(os.path.join(ROOT, "csrc", "cuda", "*.cpp")))
        # --threads 0: nvcc compiles the targets in parallel. The explicit -gencode flags also
        # stop torch from adding its own from TORCH_CUDA_ARCH_LIST (which knows no 9.0a
        # on older torch).
        nvcc = ["-O3", "-std=c++17", "--expt-relaxed-constexpr", "-lineinfo",
                "--threads", "0"] + cuda_arch_flags()
        ext = CUDAExtension("sparsekern._C", sources, include_dirs=include,
                            define_macros=[("SPARSEKERN_WITH_CUDA", "1"), LIMITED_API],
                            py_limited_api=True,
                            extra_compile_args={"cxx": cxx + ["-DSPARSEKERN_WITH_CUDA=1"],
                                                "nvcc": nvcc},
                            extra_link_args=link)
    else:
        ext = CppExtension("sparsekern._C", sources, include_dirs=include,
                           define_macros=[LIMITED_API], py_limited_api=True,
                           extra_compile_args={"cxx": cxx}, extra_link_args=link)
    build = BuildExtension.with_options(use_ninja=shutil.which("ninja") is not None)
    return [ext], {"build_ext": _drop_other_builds(build)}


def _drop_other_builds(build_cls):
    """build_ext that, building in place, removes `_C` files with another suffix (a
    `_C.cpython-3XX-*.so` from before the abi3 build would be imported first)."""

    class Build(build_cls):
        def run(self):
            super().run()
            if not self.inplace:
                return
            for ext in self.extensions:
                keep = os.path.abspath(self.get_ext_fullpath(ext.name))
                pattern = os.path.join(os.path.dirname(keep), ext.name.split(".")[-1] + ".*.so")
                for old in glob.glob(pattern):
                    if os.path.abspath(old) != keep:
                        os.remove(old)

    return Build


if __name__ == "__main__":  # pip, build and `python setup.py` run it so; tests import it
    ext_modules, cmdclass = extensions()
    setup(ext_modules=ext_modules, cmdclass=cmdclass,
          options={"bdist_wheel": {"py_limited_api": ABI3_TAG}} if ext_modules else {})
