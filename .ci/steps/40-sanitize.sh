# ASan + UBSan build of the CPU kernels, their tests on both ISA paths; fails on any report.
bash .ci/sanitize.sh
