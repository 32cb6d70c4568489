#include <chrono>
#include <cstdio>
alignas(64) float buf[4096];
template<int MODE> __attribute__((noinline)) double run(long it){
  auto t0=std::chrono::steady_clock::now();
  if(MODE==0) asm volatile(
   "vxorps %%zmm0,%%zmm0,%%zmm0\n"
   "1:\n"
   "vpermilps %%zmm20,%%zmm21,%%zmm1\n vfmadd231ps %%zmm1,%%zmm22,%%zmm2\n"
   "vpermilps %%zmm20,%%zmm21,%%zmm3\n vfmadd231ps %%zmm3,%%zmm22,%%zmm4\n"
   "vpermilps %%zmm20,%%zmm21,%%zmm5\n vfmadd231ps %%zmm5,%%zmm22,%%zmm6\n"
   "vpermilps %%zmm20,%%zmm21,%%zmm7\n vfmadd231ps %%zmm7,%%zmm22,%%zmm8\n"
   "vpermilps %%zmm20,%%zmm21,%%zmm9\n vfmadd231ps %%zmm9,%%zmm22,%%zmm10\n"
   "vpermilps %%zmm20,%%zmm21,%%zmm11\n vfmadd231ps %%zmm11,%%zmm22,%%zmm12\n"
   "vpermilps %%zmm20,%%zmm21,%%zmm13\n vfmadd231ps %%zmm13,%%zmm22,%%zmm14\n"
   "vpermilps %%zmm20,%%zmm21,%%zmm15\n vfmadd231ps %%zmm15,%%zmm22,%%zmm16\n"
   "dec %0\n jnz 1b\n" : "+r"(it) :: "memory","zmm0","zmm1","zmm2","zmm3","zmm4","zmm5","zmm6","zmm7","zmm8","zmm9","zmm10","zmm11","zmm12","zmm13","zmm14","zmm15","zmm16");
  if(MODE==1) asm volatile(
   "1:\n"
   "vfmadd231ps %%zmm21,%%zmm22,%%zmm2\n vfmadd231ps %%zmm21,%%zmm22,%%zmm4\n"
   "vfmadd231ps %%zmm21,%%zmm22,%%zmm6\n vfmadd231ps %%zmm21,%%zmm22,%%zmm8\n"
   "vfmadd231ps %%zmm21,%%zmm22,%%zmm10\n vfmadd231ps %%zmm21,%%zmm22,%%zmm12\n"
   "vfmadd231ps %%zmm21,%%zmm22,%%zmm14\n vfmadd231ps %%zmm21,%%zmm22,%%zmm16\n"
   "vfmadd231ps %%zmm21,%%zmm22,%%zmm1\n vfmadd231ps %%zmm21,%%zmm22,%%zmm3\n"
   "vfmadd231ps %%zmm21,%%zmm22,%%zmm5\n vfmadd231ps %%zmm21,%%zmm22,%%zmm7\n"
   "dec %0\n jnz 1b\n" : "+r"(it) :: "memory","zmm1","zmm2","zmm3","zmm4","zmm5","zmm6","zmm7","zmm8","zmm10","zmm12","zmm14","zmm16");
  if(MODE==2) asm volatile(
   "1:\n"
   "vpermilps %%zmm20,%%zmm21,%%zmm1\n vpermilps %%zmm20,%%zmm21,%%zmm3\n"
   "vpermilps %%zmm20,%%zmm21,%%zmm5\n vpermilps %%zmm20,%%zmm21,%%zmm7\n"
   "vpermilps %%zmm20,%%zmm21,%%zmm9\n vpermilps %%zmm20,%%zmm21,%%zmm11\n"
   "vpermilps %%zmm20,%%zmm21,%%zmm13\n vpermilps %%zmm20,%%zmm21,%%zmm15\n"
   "dec %0\n jnz 1b\n" : "+r"(it) :: "memory","zmm1","zmm3","zmm5","zmm7","zmm9","zmm11","zmm13","zmm15");
  auto t1=std::chrono::steady_clock::now();
  return std::chrono::duration<double>(t1-t0).count();
}
int main(){ long it=100000000;
 for(int r=0;r<3;r++){
  printf("perm+fma: %.2f G pairs/s  ", 8*it/run<0>(it)/1e9);
  printf("fma only: %.2f G/s  ", 12*it/run<1>(it)/1e9);
  printf("perm only: %.2f G/s\n", 8*it/run<2>(it)/1e9);
 }}
