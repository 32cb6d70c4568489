#include "/work/main/csrc/cpu/semi24.cpp"
#include <chrono>
#include <cstdio>
#include <cstdlib>
using namespace sparsekern::cpu;
static double now(){return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();}
int main(int argc, char** argv) {
  const int64_t K = 256, G = 64, NB = 16;
  alignas(64) static float sv[G * 2 * 16]; alignas(64) static uint32_t sw[G / 8 * 16]; alignas(64) static float X[NB * K]; alignas(64) static float t[16 * 16];
  for (auto& v : sv) v = rand() / (float)RAND_MAX; for (auto& w : sw) w = 0x9999999u * 0 + 0xE4E4E4E4u; for (auto& x : X) x = rand() / (float)RAND_MAX;
  for (int64_t i = 0; i < G/8*16; ++i) sw[i] = 0x94949494u;  // nibbles (0,1),(1,2)
  long reps = 200000;
  for (int r = 0; r < 3; ++r) {
    double t0 = now();
    for (long i = 0; i < reps; ++i) lor_chunk_n(NB, sv, sw, X, K, K, 0, G, t, i == 0);
    double s = now() - t0;
    printf("lor_chunk<16> isolated: %.2f G vFMA/s (%g)\n", reps * (double)G * 2 * NB / s / 1e9, t[3]);
  }
}
