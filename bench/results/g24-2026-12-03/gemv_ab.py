"""Old vs new 2:4 GEMV kernel (N = 1), interleaved, straight through the torch-free kernel API.

    python bench/results/g24-2026-12-03/gemv_ab.py OLD_BINARY NEW_BINARY [--rounds 7]

Each binary is gemv_driver.cpp (this folder) linked with one version of csrc/cpu/semi24.cpp
(+ parallel.cpp, isa.cpp), e.g. for the old one the sources of commit c6dee85:
    g++ -O3 -std=c++17 -I<old csrc/cpu> gemv_driver.cpp semi24.cpp parallel.cpp isa.cpp -lpthread
The driver checks its output against a float64 reference (maxerr) and prints the median of
`reps` back-to-back calls (warm: the weights stay in the 105 MB L3 up to 4096x11008).
Rounds alternate old/new; the figure is the median over rounds, the spread min..max.
"""
import statistics, subprocess, sys
old, new = sys.argv[1], sys.argv[2]
rounds = int(sys.argv[sys.argv.index("--rounds") + 1]) if "--rounds" in sys.argv else 7
shapes = [(384, 384), (1536, 384), (384, 1536), (3072, 768), (768, 3072), (4096, 4096),
          (11008, 4096)]
res = {}
for r in range(rounds):
    for threads in (1, 2):
        for M, K in shapes:
            reps = str(max(20, int(2e8 // (M * K))))
            for name, exe in ((("old", old), ("new", new)) if r % 2 == 0 else (("new", new), ("old", old))):
                out = subprocess.run([exe, str(M), str(K), "1", reps, str(threads)],
                                     capture_output=True, text=True, check=True).stdout.split()
                assert out[1] == "0" and float(out[3]) < 1e-3, out  # status ok, matches reference
                res.setdefault((threads, M, K, name), []).append(float(out[7]))
print(f"| threads | M x K | old ms | new ms | old/new (min..max over {rounds} rounds) | new GB/s |")
print("|---|---|---|---|---|---|")
for threads in (1, 2):
    for M, K in shapes:
        o, n = res[(threads, M, K, "old")], res[(threads, M, K, "new")]
        ratios = [a / b for a, b in zip(o, n)]
        gbs = (M * K / 2 * 4 + M * K / 8 + 4 * K + 4 * M) / (statistics.median(n) * 1e-3) / 1e9
        print(f"| {threads} | {M}x{K} | {statistics.median(o):.3f} | {statistics.median(n):.3f} | "
              f"{statistics.median(ratios):.2f} ({min(ratios):.2f}..{max(ratios):.2f}) | {gbs:.1f} |")
