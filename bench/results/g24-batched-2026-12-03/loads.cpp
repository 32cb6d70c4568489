#include <immintrin.h>
#include <chrono>
#include <cstdio>
alignas(64) float buf[8192+64];
#define D(i) __m256 a##i=_mm256_set1_ps(i*0.f);
#define FL(i,off) a##i=_mm256_fmadd_ps(w,_mm256_load_ps(p+off),a##i);
#define FR(i) a##i=_mm256_fmadd_ps(w,r,a##i);
template<int NL>
__attribute__((noinline)) double run(long iters, float* out){
  D(0)D(1)D(2)D(3)D(4)D(5)D(6)D(7)D(8)D(9)D(10)D(11)
  __m256 w=_mm256_set1_ps(1.0001f), r=_mm256_set1_ps(0.5f);
  auto t0=std::chrono::steady_clock::now();
  for(long it=0;it<iters;it++){
    const float* p=buf+(it&31)*192;
    if(NL) {FL(0,0)FL(1,8)FL(2,16)FL(3,24)FL(4,32)FL(5,40)FL(6,48)FL(7,56)FL(8,64)FL(9,72)FL(10,80)FL(11,88)}
    else {FR(0)FR(1)FR(2)FR(3)FR(4)FR(5)FR(6)FR(7)FR(8)FR(9)FR(10)FR(11)}
  }
  auto t1=std::chrono::steady_clock::now();
  _mm256_storeu_ps(out, a0+a1+a2+a3+a4+a5+a6+a7+a8+a9+a10+a11);
  return std::chrono::duration<double>(t1-t0).count();
}
// pure zmm loads: sum via OR to avoid FMA
__attribute__((noinline)) double loads(long iters, float* out){
  __m512i x0=_mm512_setzero_si512(),x1=x0,x2=x0,x3=x0;
  auto t0=std::chrono::steady_clock::now();
  for(long it=0;it<iters;it++){
    const int* p=(const int*)buf+(it&31)*192;
    x0=_mm512_ternarylogic_epi32(x0,_mm512_load_si512(p),_mm512_load_si512(p+16),0x96);
    x1=_mm512_ternarylogic_epi32(x1,_mm512_load_si512(p+32),_mm512_load_si512(p+48),0x96);
    x2=_mm512_ternarylogic_epi32(x2,_mm512_load_si512(p+64),_mm512_load_si512(p+80),0x96);
    x3=_mm512_ternarylogic_epi32(x3,_mm512_load_si512(p+96),_mm512_load_si512(p+112),0x96);
  }
  auto t1=std::chrono::steady_clock::now();
  _mm512_storeu_si512(out, x0^x1^x2^x3);
  return std::chrono::duration<double>(t1-t0).count();
}
int main(){
  long it=100000000; float o[16];
  for(int rep=0;rep<2;rep++){
  double t;
  t=run<0>(it,o);  printf("ymm 0 loads: %.2f G fma/s\n", 12*it/t/1e9);
  t=run<1>(it,o);  printf("ymm 12/12: %.2f G fma/s\n", 12*it/t/1e9);
  t=loads(it,o);  printf("zmm pure loads: %.2f G loads/s\n", 8*it/t/1e9);
  }
}
