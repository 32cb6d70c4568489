// Standalone: CSC GEMV variants at M=K=4096, 90% sparse. g++ -O3 -march=native
#include <immintrin.h>
#include <chrono>
#include <cstdio>
#include <cstdint>
#include <random>
#include <vector>
#include <algorithm>
#include <cstring>
using namespace std;
static double now(){return chrono::duration<double>(chrono::steady_clock::now().time_since_epoch()).count();}
int M=4096,K=4096; double dens=0.1;
vector<float> vals; vector<int16_t> rows; vector<int32_t> ptr; vector<float> x,y;
// CSR
vector<float> cv; vector<int16_t> cc; vector<int32_t> rp;
__attribute__((noinline)) void walk_vec(){
  memset(y.data(),0,M*4);
  for(int k=0;k<K;k++){ int s=ptr[k],e=ptr[k+1]; __m512 xv=_mm512_set1_ps(x[k]); int j=s;
    for(;j+16<=e;j+=16){ __m512i r=_mm512_cvtepi16_epi32(_mm256_loadu_si256((const __m256i*)(rows.data()+j)));
      __m512 yv=_mm512_i32gather_ps(r,y.data(),4); _mm512_i32scatter_ps(y.data(),r,_mm512_fmadd_ps(_mm512_loadu_ps(vals.data()+j),xv,yv),4);}
    for(;j<e;j++) y[rows[j]]+=vals[j]*x[k]; }
}
__attribute__((noinline)) void walk_scalar(){
  memset(y.data(),0,M*4);
  for(int k=0;k<K;k++){ int s=ptr[k],e=ptr[k+1]; float xk=x[k];
    for(int j=s;j<e;j++) y[rows[j]]=__builtin_fmaf(vals[j],xk,y[rows[j]]); }
}
// two columns interleaved: gather both, scatter both; conflicts between the two handled by
// processing col b's vector after col a's scatter only when they overlap (vpconflict on concat)
__attribute__((noinline)) void walk_vec2(){
  memset(y.data(),0,M*4);
  int k=0;
  for(;k+1<K;k+=2){ int s0=ptr[k],e0=ptr[k+1],s1=ptr[k+1],e1=ptr[k+2];
    __m512 x0=_mm512_set1_ps(x[k]),x1=_mm512_set1_ps(x[k+1]); int j0=s0,j1=s1;
    for(;j0+16<=e0&&j1+16<=e1;j0+=16,j1+=16){
      __m512i r0=_mm512_cvtepi16_epi32(_mm256_loadu_si256((const __m256i*)(rows.data()+j0)));
      __m512i r1=_mm512_cvtepi16_epi32(_mm256_loadu_si256((const __m256i*)(rows.data()+j1)));
      // overlap test: any r1 lane equal to any r0 lane
      __mmask16 ov=0; for(int t=0;t<16;t++){ ov|=_mm512_cmpeq_epi32_mask(r1,_mm512_permutexvar_epi32(_mm512_set1_epi32(t),r0)); }
      __m512 y0=_mm512_i32gather_ps(r0,y.data(),4);
      if(!ov){ __m512 y1=_mm512_i32gather_ps(r1,y.data(),4);
        _mm512_i32scatter_ps(y.data(),r0,_mm512_fmadd_ps(_mm512_loadu_ps(vals.data()+j0),x0,y0),4);
        _mm512_i32scatter_ps(y.data(),r1,_mm512_fmadd_ps(_mm512_loadu_ps(vals.data()+j1),x1,y1),4);
      } else {
        _mm512_i32scatter_ps(y.data(),r0,_mm512_fmadd_ps(_mm512_loadu_ps(vals.data()+j0),x0,y0),4);
        __m512 y1=_mm512_i32gather_ps(r1,y.data(),4);
        _mm512_i32scatter_ps(y.data(),r1,_mm512_fmadd_ps(_mm512_loadu_ps(vals.data()+j1),x1,y1),4);
      }
    }
    for(;j0<e0;j0++) y[rows[j0]]+=vals[j0]*x[k];
    for(;j1<e1;j1++) y[rows[j1]]+=vals[j1]*x[k+1];
  }
  for(;k<K;k++) for(int j=ptr[k];j<ptr[k+1];j++) y[rows[j]]+=vals[j]*x[k];
}
__attribute__((noinline)) void csr_gather(){
  for(int r=0;r<M;r++){ int s=rp[r],e=rp[r+1]; __m512 acc=_mm512_setzero_ps(); int j=s;
    for(;j+16<=e;j+=16){ __m512i c=_mm512_cvtepi16_epi32(_mm256_loadu_si256((const __m256i*)(cc.data()+j)));
      acc=_mm512_fmadd_ps(_mm512_loadu_ps(cv.data()+j),_mm512_i32gather_ps(c,x.data(),4),acc);}
    float s2=_mm512_reduce_add_ps(acc); for(;j<e;j++) s2+=cv[j]*x[cc[j]]; y[r]=s2; }
}
__attribute__((noinline)) void memcmp_check(){ volatile int r=memcmp(vals.data(),cv.data(),vals.size()*4); r+=memcmp(rows.data(),cc.data(),rows.size()*2); }
template<class F> double bench(F f){ double best=1e9; vector<double> t; for(int i=0;i<200;i++){double t0=now(); f(); t.push_back(now()-t0);} sort(t.begin(),t.end()); return t[t.size()/2]*1e3; }
int main(){ mt19937 g(0); uniform_real_distribution<float> u(-1,1);
  ptr.push_back(0); for(int k=0;k<K;k++){ for(int r=0;r<M;r++) if(u(g)*0.5f+0.5f<dens){rows.push_back(r); vals.push_back(u(g));} ptr.push_back(rows.size()); }
  x.resize(K); for(auto&v:x)v=u(g); y.resize(M);
  // CSR
  rp.assign(M+1,0); for(auto r:rows) rp[r+1]++; for(int r=0;r<M;r++) rp[r+1]+=rp[r];
  cv.resize(vals.size()); cc.resize(vals.size()); vector<int> pos(rp.begin(),rp.end()-1);
  for(int k=0;k<K;k++) for(int j=ptr[k];j<ptr[k+1];j++){int p=pos[rows[j]]++; cv[p]=vals[j]; cc[p]=k;}
  printf("nnz %zu\n",vals.size());
  for(int rep=0;rep<3;rep++){
  printf("walk_vec %.3f ms\n",bench(walk_vec)); vector<float> y1=y;
  printf("walk_scalar %.3f ms\n",bench(walk_scalar));
  printf("walk_vec2 %.3f ms\n",bench(walk_vec2)); vector<float> y2=y;
  printf("csr_gather %.3f ms\n",bench(csr_gather));
  printf("memcmp %.3f ms\n",bench(memcmp_check));
  double md=0; for(int i=0;i<M;i++) md=max(md,(double)fabs(y1[i]-y2[i])); printf("vec2 diff %g\n",md);}
}
