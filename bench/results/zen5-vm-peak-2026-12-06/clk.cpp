#include <chrono>
#include <cstdio>
#include <cstdint>
int main() { for (int k = 0; k < 3; ++k) { uint64_t x = 1; int64_t n = 1000000000; auto t0 = std::chrono::steady_clock::now();
  for (int64_t i = 0; i < n; ++i) { asm volatile("add $1, %0\n\tadd $1, %0\n\tadd $1, %0\n\tadd $1, %0" : "+r"(x)); }
  double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  printf("%.2f GHz (dependent adds) %lu\n", 4.0 * n / s / 1e9, x); } }
