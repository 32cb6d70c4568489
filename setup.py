"""Build of sparsekern._C.

The C++ CPU kernels (csrc/ops.cpp, csrc/cpu/*.cpp) are always built with torch's
CppExtension (C++17, -O3, OpenMP). CUDA sources (csrc/cuda/*.cu + their glue) are added only
when torch reports CUDA and nvcc is found. Environment switches:
    SPARSEKERN_CUDA=0|1|auto   force the CUDA part off / on (on fails without nvcc)
    SPARSEKERN_SANITIZE=1      build with AddressSanitizer + UBSan (for the sanitizer job)
    SPARSEKERN_NO_EXTENSION=1  build no extension (pure Python; the reference backend serves)
Build with `pip install --no-build-isolation .` so the installed torch is the one used.
"""
import glob
import os
import shutil

from setuptools import setup

ROOT = os.path.dirname(os.path.abspath(__file__))


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
    link = ["-fopenmp"] + (["-fsanitize=address,undefined"] if sanitize else [])
    sources = _rel([os.path.join(ROOT, "csrc", "ops.cpp")] +
                   glob.glob(os.path.join(ROOT, "csrc", "cpu", "*.cpp")))
    include = [os.path.join(ROOT, "csrc")]
    if _want_cuda(torch, CUDA_HOME):
        sources += _rel(glob.glob(os.path.join(ROOT, "csrc", "cuda", "*.cu")) +
                        glob.glob(os.path.join(ROOT, "csrc", "cuda", "*.cpp")))
        nvcc = ["-O3", "-std=c++17", "--expt-relaxed-constexpr", "-lineinfo",
                "-gencode=arch=compute_80,code=sm_80",
                "-gencode=arch=compute_90,code=sm_90",
                "-gencode=arch=compute_90a,code=sm_90a"]
        ext = CUDAExtension("sparsekern._C", sources, include_dirs=include,
                            define_macros=[("SPARSEKERN_WITH_CUDA", "1")],
                            extra_compile_args={"cxx": cxx + ["-DSPARSEKERN_WITH_CUDA=1"],
                                                "nvcc": nvcc},
                            extra_link_args=link)
    else:
        ext = CppExtension("sparsekern._C", sources, include_dirs=include,
                           extra_compile_args={"cxx": cxx}, extra_link_args=link)
    return [ext], {"build_ext": BuildExtension.with_options(use_ninja=shutil.which("ninja") is not None)}


ext_modules, cmdclass = extensions()
setup(ext_modules=ext_modules, cmdclass=cmdclass)
