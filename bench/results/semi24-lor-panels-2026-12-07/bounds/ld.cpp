#include <immintrin.h>
#include <chrono>
#include <cstdio>
template<int MODE> __attribute__((target("avx512f"),noinline)) float run(long iters, const float* x) {
  __m512 acc[24]; for (int i=0;i<24;++i) acc[i]=_mm512_set1_ps(i*1e-9f);
  __m512 w0=_mm512_set1_ps(1.0000001f);
  for (long it=0; it<iters; ++it) {
    const float* p = x + ((it * 64) & 4095);
    asm volatile("" : "+r"(p));
    if (MODE==0) {  // FMA with a 512-bit memory operand, 24 distinct lines
      #pragma GCC unroll 24
      for (int n=0;n<24;++n) acc[n]=_mm512_fmadd_ps(w0,_mm512_loadu_ps(p + 16*n),acc[n]);
    } else {  // broadcast + 4 FMA w/ memory operand (panel-like: 1.25 loads per FMA)
      #pragma GCC unroll 6
      for (int r=0;r<6;++r) { __m512 w=_mm512_set1_ps(p[1000+r]);
        #pragma GCC unroll 4
        for (int u=0;u<4;++u) acc[4*r+u]=_mm512_fmadd_ps(w,_mm512_loadu_ps(p + 16*(4*r+u)),acc[4*r+u]); }
    }
  }
  __m512 s=acc[0]; for(int i=1;i<24;++i) s=_mm512_add_ps(s,acc[i]); return _mm512_reduce_add_ps(s);
}
static double now(){return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();}
int main(){ alignas(64) static float x[8192]; for(int i=0;i<8192;++i)x[i]=i*1e-3f; long iters=20000000;
 for (int rep=0;rep<3;++rep){ double t0=now(); float r0=run<0>(iters,x); double t1=now(); float r1=run<1>(iters,x); double t2=now();
 printf("fma+load %.2f G/s  bcast+4x(fma+load) %.2f G FMA/s (%g %g)\n", 24.0*iters/(t1-t0)/1e9, 24.0*iters/(t2-t1)/1e9, r0,r1);} }
