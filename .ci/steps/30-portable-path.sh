# The CPU kernels on the portable path (no AVX2): the op and CPU kernel tests again.
SPARSEKERN_CPU_ISA=portable python -m pytest -q -p no:cacheprovider tests/test_ops.py tests/test_errors.py tests/backends tests/formats/test_properties.py
