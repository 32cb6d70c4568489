# Compile every CUDA source for sm_80 and sm_90a (objects only; nothing runs here).
bash .ci/nvcc_check.sh
