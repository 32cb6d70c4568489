#include <immintrin.h>
#include <chrono>
#include <cstdio>
template<int MODE> __attribute__((target("avx512f"),noinline)) float run(long iters, const float* x) {
  __m512 acc[24]; for (int i=0;i<24;++i) acc[i]=_mm512_set1_ps(i*1e-9f);
  __m512 w0=_mm512_set1_ps(1.0000001f);
  __m512i i0=_mm512_set_epi32(0,1,2,3,4,5,6,7,0,1,2,3,4,5,6,7);
  for (long it=0; it<iters; ++it) {
    __m512 xv = _mm512_loadu_ps(x + (it & 63));
    asm volatile("" : "+v"(xv));
    if (MODE==0) {  // pure FMA, 24 independent
      #pragma GCC unroll 24
      for (int n=0;n<24;++n) acc[n]=_mm512_fmadd_ps(w0,xv,acc[n]);
    } else if (MODE==1) {  // perm + FMA 1:1
      #pragma GCC unroll 24
      for (int n=0;n<24;++n) acc[n]=_mm512_fmadd_ps(w0,_mm512_permutexvar_ps(_mm512_add_epi32(i0,_mm512_set1_epi32(n)),xv),acc[n]);
    } else {  // perms only
      #pragma GCC unroll 24
      for (int n=0;n<24;++n) acc[n]=_mm512_permutexvar_ps(i0,_mm512_add_ps(acc[n],xv));
    }
  }
  __m512 s=acc[0]; for(int i=1;i<24;++i) s=_mm512_add_ps(s,acc[i]); return _mm512_reduce_add_ps(s);
}
static double now(){return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();}
int main(){ alignas(64) static float x[256]; for(int i=0;i<256;++i)x[i]=i*1e-3f; long iters=20000000;
 for (int rep=0;rep<2;++rep){ double t0=now(); float r0=run<0>(iters,x); double t1=now(); float r1=run<1>(iters,x); double t2=now(); float r2=run<2>(iters,x); double t3=now();
 printf("fma %.2f G/s  perm+fma %.2f G FMA/s  perm+add %.2f G/s  (%g %g %g)\n", 24.0*iters/(t1-t0)/1e9, 24.0*iters/(t2-t1)/1e9, 24.0*iters/(t3-t2)/1e9, r0,r1,r2);} }
