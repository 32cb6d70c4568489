// Torch-free harness of sparsekern's fused attention kernel (csrc/cpu/attention.cpp):
// checks a float32 call against the float64 (portable) one and times it.
//   g++ -O3 -std=c++17 -fopenmp -DNDEBUG kernel_harness.cpp csrc/cpu/{attention,isa,parallel}.cpp \
//       -I csrc/cpu -o h      (from the repository root)
//   [SPARSEKERN_CPU_ISA=avx512|avx2|portable] [THREADS=2] ./h B H Hkv Sq Sk D Dv TOKEN_MAJOR MASK [SECONDS]
// TOKEN_MAJOR 1: q/k/v stored [B, S, H, D]; 0: [H*D, B*S] (a SparseLinear's output). MASK 0: none,
// 1: additive per key [B, Sk], 2: additive [B, Sq, Sk] with some -inf entries.
#include "kernels.h"
#include "isa.h"
#include <cstdio>
#include <cstdlib>
#include <cmath>
#include <vector>
#include <chrono>
#include <algorithm>
using namespace sparsekern::cpu;
template<typename T> AttentionArgs<T> mk(int B,int H,int Hkv,int Sq,int Sk,int D,int Dv,bool tokmajor, const T* q,const T* k,const T* v,const T* m,int mode,T* o){
  AttentionArgs<T> a; a.B=B;a.H=H;a.Hkv=Hkv;a.Sq=Sq;a.Sk=Sk;a.D=D;a.Dv=Dv;
  long Nq=(long)B*Sq, Nk=(long)B*Sk;
  if(tokmajor){a.q=q;a.q_b=(long)Sq*H*D;a.q_h=D;a.q_s=H*D;a.q_d=1; a.k=k;a.k_b=(long)Sk*Hkv*D;a.k_h=D;a.k_s=Hkv*D;a.k_d=1; a.v=v;a.v_b=(long)Sk*Hkv*Dv;a.v_h=Dv;a.v_s=Hkv*Dv;a.v_d=1;}
  else {a.q=q;a.q_b=Sq;a.q_h=D*Nq;a.q_s=1;a.q_d=Nq; a.k=k;a.k_b=Sk;a.k_h=D*Nk;a.k_s=1;a.k_d=Nk; a.v=v;a.v_b=Sk;a.v_h=(long)Dv*Nk;a.v_s=1;a.v_d=Nk;}
  a.out=o;a.o_b=(long)Sq*H*Dv;a.o_h=Dv;a.o_s=H*Dv;a.o_d=1;
  if(mode==1){a.mask=m;a.m_b=Sk;a.m_h=0;a.m_i=0;a.m_j=1;}
  if(mode==2){a.mask=m;a.m_b=(long)Sq*Sk;a.m_h=0;a.m_i=Sk;a.m_j=1;}
  a.scale=1/std::sqrt((T)D); a.num_threads=getenv("THREADS")?atoi(getenv("THREADS")):2; return a;}
int main(int argc,char**argv){
  int B=atoi(argv[1]),H=atoi(argv[2]),Hkv=atoi(argv[3]),Sq=atoi(argv[4]),Sk=atoi(argv[5]),D=atoi(argv[6]),Dv=atoi(argv[7]),tm=atoi(argv[8]),mode=atoi(argv[9]); double secs=argc>10?atof(argv[10]):0;
  size_t nq=(size_t)B*Sq*H*D, nk=(size_t)B*Sk*Hkv*D, nv=(size_t)B*Sk*Hkv*Dv, no=(size_t)B*Sq*H*Dv, nm=(size_t)B*Sq*Sk;
  std::vector<float> q(nq),k(nk),v(nv),m(nm),o(no); std::vector<double> qd(nq),kd(nk),vd(nv),md(nm),od(no);
  srand(1); for(size_t i=0;i<nq;++i)qd[i]=q[i]=(rand()/(float)RAND_MAX-0.5f)*4; for(size_t i=0;i<nk;++i)kd[i]=k[i]=(rand()/(float)RAND_MAX-0.5f)*4; for(size_t i=0;i<nv;++i)vd[i]=v[i]=(rand()/(float)RAND_MAX-0.5f)*2;
  for(size_t i=0;i<nm;++i){float x=(rand()%5==0)?-INFINITY:(rand()/(float)RAND_MAX); md[i]=m[i]=x;} for(int b=0;b<B;++b) {m[(size_t)b*Sq*Sk]=0; md[(size_t)b*Sq*Sk]=0;}
  auto a=mk<float>(B,H,Hkv,Sq,Sk,D,Dv,tm,q.data(),k.data(),v.data(),m.data(),mode,o.data());
  auto ad=mk<double>(B,H,Hkv,Sq,Sk,D,Dv,tm,qd.data(),kd.data(),vd.data(),md.data(),mode,od.data());
  int s1=attention(a), s2=attention(ad); double e=0; size_t nan1=0,nan2=0;
  for(size_t i=0;i<no;++i){ if(std::isnan(o[i]))nan1++; if(std::isnan(od[i]))nan2++; if(!std::isnan(od[i])) e=std::max(e,std::fabs(o[i]-od[i]));}
  printf("isa %s st %d %d maxerr %.3g nan %zu %zu\n", active_isa_name(), s1,s2,e,nan1,nan2);
  if(secs>0){std::vector<double> ts; auto t0=std::chrono::steady_clock::now();
    while(std::chrono::duration<double>(std::chrono::steady_clock::now()-t0).count()<secs){auto x=std::chrono::steady_clock::now(); attention(a); ts.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now()-x).count());}
    std::sort(ts.begin(),ts.end()); double med=ts[ts.size()/2]; printf("median %.3f ms %.0f GFLOP/s\n",med*1e3, 2.0*B*H*Sq*Sk*(D+Dv)/med/1e9);}
}
