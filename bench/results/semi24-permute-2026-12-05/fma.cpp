#include <immintrin.h>
#include <chrono>
#include <cstdio>
int main(){
  __m512 a[12]; for(int i=0;i<12;++i) a[i]=_mm512_set1_ps(i*0.001f);
  __m512 b=_mm512_set1_ps(0.999f), c=_mm512_set1_ps(0.0001f);
  __m512i ix = _mm512_set_epi32(1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,0);
  for(int rep=0;rep<3;++rep){
  auto t0=std::chrono::steady_clock::now();
  long n=200000000;
  for(long i=0;i<n;++i){ for(int j=0;j<12;++j) a[j]=_mm512_fmadd_ps(a[j],b,c); }
  double s=std::chrono::duration<double>(std::chrono::steady_clock::now()-t0).count();
  printf("fma %.2f G/s\n", n*12/s/1e9);
  __m512 p[12]; for(int i=0;i<12;++i) p[i]=_mm512_set1_ps(i);
  t0=std::chrono::steady_clock::now();
  n=50000000;
  for(long i=0;i<n;++i){ for(int j=0;j<12;++j) p[j]=_mm512_permutexvar_ps(ix,p[j]); }
  s=std::chrono::duration<double>(std::chrono::steady_clock::now()-t0).count();
  printf("perm %.2f G/s\n", n*12/s/1e9);
  float acc=0; for(int j=0;j<12;++j) acc+=_mm512_reduce_add_ps(a[j])+_mm512_reduce_add_ps(p[j]);
  printf("%f\n",acc);}
}
