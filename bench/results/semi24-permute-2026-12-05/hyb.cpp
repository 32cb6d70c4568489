#include <immintrin.h>
#include <chrono>
#include <cstdio>
#include <vector>
#include <cstdint>
#include <cstdlib>
// P stream: lane-over-m perm kernel on 16 rows; L stream: panel kernel (broadcast w, load panel row) on R rows.
// Shapes: K chunk of KC k-values, N=16 columns (one zmm in L stream). All in L1.
constexpr int KC = 256;
template<int NB, int R, bool DO_P, bool DO_L>
void kern(const float* V, const int32_t* I, const float* xT, // P: V,I [KC/16][8][16], xT [NB][KC]
          const float* w, const int32_t* kidx, const float* P, // L: w [R][KC/2], kidx[R][KC/2], P[KC][16]
          float* out) {
  __m512 accP[NB]; __m512 accL[R];
  for (int j = 0; j < NB; ++j) accP[j] = _mm512_setzero_ps();
  for (int r = 0; r < R; ++r) accL[r] = _mm512_setzero_ps();
  for (int c = 0; c < KC/16; ++c) {
    if (DO_P) {
    __m512 Vs[8]; __m512i Is[8];
    for (int s = 0; s < 8; ++s) { Vs[s] = _mm512_loadu_ps(V + (c*8+s)*16); Is[s] = _mm512_loadu_si512(I + (c*8+s)*16); }
    for (int j = 0; j < NB; ++j) {
      __m512 xv = _mm512_loadu_ps(xT + j*KC + c*16);
      for (int s = 0; s < 8; ++s) accP[j] = _mm512_fmadd_ps(Vs[s], _mm512_permutexvar_ps(Is[s], xv), accP[j]);
    }
    }
    if (DO_L) {
    // same chunk: 8 kept values per row
    for (int r = 0; r < R; ++r)
      for (int s = 0; s < 8; ++s) {
        int t = c*8+s;
        accL[r] = _mm512_fmadd_ps(_mm512_set1_ps(w[r*(KC/2)+t]), _mm512_loadu_ps(P + kidx[r*(KC/2)+t]*16), accL[r]);
      }
    }
  }
  for (int j = 0; j < NB; ++j) _mm512_storeu_ps(out + j*16, accP[j]);
  for (int r = 0; r < R; ++r) _mm512_storeu_ps(out + (NB+r)*16, accL[r]);
}
template<int NB, int R, bool DP, bool DL>
void run(const char* name, std::vector<float>& V, std::vector<int32_t>& I, std::vector<float>& xT, std::vector<float>& w, std::vector<int32_t>& kidx, std::vector<float>& P, std::vector<float>& out) {
  long iters = 200000;
  double best = 0;
  for (int rep = 0; rep < 3; ++rep) {
  auto t0 = std::chrono::steady_clock::now();
  for (long it = 0; it < iters; ++it) { kern<NB,R,DP,DL>(V.data(), I.data(), xT.data(), w.data(), kidx.data(), P.data(), out.data()); asm volatile("" ::: "memory"); }
  double s = std::chrono::duration<double>(std::chrono::steady_clock::now()-t0).count();
  double f = (double)iters * ((DP? NB*KC/2 : 0) + (DL ? R*KC/2 : 0));
  if (f/s/1e9 > best) best = f/s/1e9;
  }
  printf("%s: %.2f G vFMA/s\n", name, best);
}
int main() {
  std::vector<float> V(KC/2*16), xT(16*KC), w(8*KC/2), P(KC*16), out(64*16);
  std::vector<int32_t> I(KC/2*16), kidx(8*KC/2);
  for (auto& a: V) a = rand()/(float)RAND_MAX*1e-3f;
  for (auto& a: xT) a = rand()/(float)RAND_MAX;
  for (auto& a: w) a = rand()/(float)RAND_MAX*1e-3f;
  for (auto& a: P) a = rand()/(float)RAND_MAX;
  for (auto& a: I) a = rand()%16;
  for (int r = 0; r < 8; ++r) for (int t = 0; t < KC/2; ++t) kidx[r*(KC/2)+t] = (t/2)*4 + (t%2)*2 + rand()%2;
  run<8,4,true,false>("P only NB=8", V,I,xT,w,kidx,P,out);
  run<8,4,false,true>("L only R=4", V,I,xT,w,kidx,P,out);
  run<8,8,false,true>("L only R=8", V,I,xT,w,kidx,P,out);
  run<8,4,true,true>("P NB=8 + L R=4", V,I,xT,w,kidx,P,out);
  run<6,6,true,true>("P NB=6 + L R=6", V,I,xT,w,kidx,P,out);
  run<8,8,true,true>("P NB=8 + L R=8", V,I,xT,w,kidx,P,out);
  run<4,8,true,true>("P NB=4 + L R=8", V,I,xT,w,kidx,P,out);
}
