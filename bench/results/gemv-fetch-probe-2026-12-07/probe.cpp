#include <immintrin.h>
#include <x86intrin.h>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>
#include <algorithm>
#include <cstdint>
static double ticks_per_ns() {
  auto t0 = std::chrono::steady_clock::now(); uint64_t c0 = __rdtsc();
  while (std::chrono::steady_clock::now() - t0 < std::chrono::microseconds(200)) {}
  auto t1 = std::chrono::steady_clock::now(); uint64_t c1 = __rdtsc();
  return (c1 - c0) / (double)std::chrono::duration_cast<std::chrono::nanoseconds>(t1 - t0).count();
}
static uint64_t probe(const char* p, int64_t bytes) {
  _mm_lfence(); uint64_t c0 = __rdtsc(); _mm_lfence();
  int s = 0;
  for (int i = 0; i < 8; ++i) s += *(volatile const char*)(p + ((bytes * (2 * i + 1) / 16) & ~63LL));
  asm volatile("" :: "r"(s));
  _mm_lfence(); uint64_t c1 = __rdtsc(); _mm_lfence();
  return c1 - c0;
}
int main(int argc, char** argv) {
  int64_t S = atoll(argv[1]);
  double tpn = ticks_per_ns(); printf("ticks/ns %.3f\n", tpn);
  int nbuf = (int)(96e6 / S) + 2;
  std::vector<char*> bufs; for (int i = 0; i < nbuf; ++i) { char* b = (char*)malloc(S); memset(b, i, S); bufs.push_back(b); }
  std::vector<double> warm, cold, empty;
  volatile long sink = 0;
  for (int rep = 0; rep < 200; ++rep) {
    // warm: read buffer 0 fully, then probe it
    long s = 0; for (int64_t i = 0; i < S; i += 64) s += bufs[0][i]; sink += s;
    warm.push_back(probe(bufs[0], S) / tpn);
    // cold: probe a buffer touched nbuf-1 buffers ago (rotate through all)
    char* b = bufs[1 + rep % (nbuf - 1)];
    cold.push_back(probe(b, S) / tpn);
    for (int64_t i = 0; i < S; i += 64) s += b[i]; sink += s;
    _mm_lfence(); uint64_t c0 = __rdtsc(); _mm_lfence(); _mm_lfence(); uint64_t c1 = __rdtsc(); empty.push_back((c1 - c0) / tpn);
  }
  auto pr = [](const char* n, std::vector<double>& v) { std::sort(v.begin(), v.end()); printf("%-6s p5 %6.1f  p50 %6.1f  p95 %6.1f  max %7.1f ns\n", n, v[v.size()/20], v[v.size()/2], v[v.size()*19/20], v.back()); };
  pr("warm", warm); pr("cold", cold); pr("empty", empty);
}
