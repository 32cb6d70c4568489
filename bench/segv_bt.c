// LD_PRELOAD shim (bench/gpu_check.sh preloads it into its test stages): on SIGSEGV or SIGBUS
// print the native backtrace to stderr, one frame per line as `#i <object path> +0x<offset>
// <exported symbol or ?>` (gpu_check.sh decodes the offsets with addr2line), then re-raise
// with the default action so the exit status stays the crash's. Python's faulthandler, when
// enabled later, restores this handler after printing its own traceback.
#define _GNU_SOURCE
#include <execinfo.h>
#include <signal.h>
#include <string.h>
#include <unistd.h>
#include <dlfcn.h>
#include <stdio.h>
static void handler(int sig) {
  void* frames[64];
  int n = backtrace(frames, 64);
  char buf[128];
  int len = snprintf(buf, sizeof buf, "\n=== segv_bt: signal %d, %d frames ===\n", sig, n);
  write(2, buf, len);
  for (int i = 0; i < n; ++i) {
    Dl_info info;
    if (dladdr(frames[i], &info) && info.dli_fname) {
      len = snprintf(buf, sizeof buf, "#%d %s +0x%lx %s\n", i, info.dli_fname,
                     (unsigned long)((char*)frames[i] - (char*)info.dli_fbase),
                     info.dli_sname ? info.dli_sname : "?");
    } else {
      len = snprintf(buf, sizeof buf, "#%d %p\n", i, frames[i]);
    }
    write(2, buf, len);
  }
  signal(sig, SIG_DFL);
  raise(sig);
}
__attribute__((constructor)) static void install(void) {
  void* warm[2]; backtrace(warm, 2);  // load libgcc before any signal
  signal(SIGSEGV, handler); signal(SIGBUS, handler);
}
