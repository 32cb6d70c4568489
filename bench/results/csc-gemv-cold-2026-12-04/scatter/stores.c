#include <immintrin.h>
#include <stdio.h>
#include <stdlib.h>
#include <stdint.h>
#include <string.h>
#include <time.h>
#include <math.h>
#define M 4096
#define K 4096
static double now(){struct timespec t;clock_gettime(CLOCK_MONOTONIC,&t);return t.tv_sec+t.tv_nsec*1e-9;}
int cmp(const void*a,const void*b){return *(int16_t*)a-*(int16_t*)b;}
int64_t colptr[K+1]; int16_t* rows; float* vals; float x[K]; float y[M];
__attribute__((target("avx512f,avx512bw,avx512vl,avx512dq"),noinline)) void A(void){
  for(int k=0;k<K;k++){float xk=x[k]; int64_t s=colptr[k],e=colptr[k+1],j=s;
    for(;j+16<=e;j+=16){
      #pragma GCC unroll 16
      for(int i=0;i<16;i++) y[rows[j+i]]=fmaf(vals[j+i],xk,y[rows[j+i]]);}
    for(;j<e;j++) y[rows[j]]=fmaf(vals[j],xk,y[rows[j]]);}}
__attribute__((target("avx512f,avx512bw,avx512vl,avx512dq"),noinline)) void B(void){
  float prod[16] __attribute__((aligned(64))); int32_t idx[16] __attribute__((aligned(64)));
  for(int k=0;k<K;k++){__m512 xv=_mm512_set1_ps(x[k]); int64_t s=colptr[k],e=colptr[k+1],j=s;
    for(;j+16<=e;j+=16){
      _mm512_store_ps(prod,_mm512_mul_ps(_mm512_loadu_ps(vals+j),xv));
      _mm512_store_si512(idx,_mm512_cvtepi16_epi32(_mm256_loadu_si256((const __m256i*)(rows+j))));
      #pragma GCC unroll 16
      for(int i=0;i<16;i++) y[idx[i]]+=prod[i];}
    for(;j<e;j++) y[rows[j]]+=vals[j]*x[k];}}
/* C: two columns interleaved entry by entry (independent streams) */
__attribute__((target("avx512f,avx512bw,avx512vl,avx512dq"),noinline)) void C(void){
  int k=0;
  for(;k+1<K;k+=2){float x0=x[k],x1=x[k+1]; int64_t s0=colptr[k],e0=colptr[k+1],s1=e0,e1=colptr[k+2];
    int64_t n=(e0-s0)<(e1-s1)?(e0-s0):(e1-s1); int64_t i=0;
    for(;i+8<=n;i+=8){
      #pragma GCC unroll 8
      for(int u=0;u<8;u++){ y[rows[s0+i+u]]=fmaf(vals[s0+i+u],x0,y[rows[s0+i+u]]); y[rows[s1+i+u]]=fmaf(vals[s1+i+u],x1,y[rows[s1+i+u]]);} }
    for(int64_t j=s0+i;j<e0;j++) y[rows[j]]=fmaf(vals[j],x0,y[rows[j]]);
    for(int64_t j=s1+i;j<e1;j++) y[rows[j]]=fmaf(vals[j],x1,y[rows[j]]);}
  for(;k<K;k++) for(int64_t j=colptr[k];j<colptr[k+1];j++) y[rows[j]]=fmaf(vals[j],x[k],y[rows[j]]);}
float sink;
__attribute__((target("avx512f,avx512bw,avx512vl,avx512dq"),noinline)) void F(void){ float acc[4]={0};
  for(int k=0;k<K;k++){float xk=x[k]; for(int64_t j=colptr[k];j<colptr[k+1];j++) acc[j&3]+=vals[j]*xk*y[rows[j]];} sink=acc[0]+acc[1]+acc[2]+acc[3];}
__attribute__((target("avx512f,avx512bw,avx512vl,avx512dq"),noinline)) void G(void){
  for(int k=0;k<K;k++){float xk=x[k]; int64_t s=colptr[k],e=colptr[k+1],j=s;
    for(;j+16<=e;j+=16){
      #pragma GCC unroll 16
      for(int i=0;i<16;i++) y[rows[j+i]]=vals[j+i]*xk;}
    for(;j<e;j++) y[rows[j]]=vals[j]*xk;}}
int main(int argc,char**argv){double dens=0.1; srand(1);
  rows=malloc(sizeof(int16_t)*M*K); vals=malloc(sizeof(float)*M*K); int64_t nnz=0;
  for(int k=0;k<K;k++){colptr[k]=nnz; for(int m=0;m<M;m++) if(rand()<dens*RAND_MAX){rows[nnz]=m; vals[nnz]=(float)rand()/RAND_MAX; nnz++;} x[k]=(float)rand()/RAND_MAX;}
  colptr[K]=nnz;
  void (*f[3])(void)={A,F,G}; const char* nm[3]={"A current","F loads only","G stores only"};
  for(int r=0;r<3;r++) for(int v=0;v<3;v++){ memset(y,0,sizeof y); f[v](); double best=1e9;
    for(int t=0;t<50;t++){double t0=now(); f[v](); double d=now()-t0; if(d<best)best=d;}
    printf("%-18s %.3f ms  %.2f ns/nnz  y0=%g\n",nm[v],best*1e3,best*1e9/nnz,y[0]);}
}
