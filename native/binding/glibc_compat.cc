// @file glibc_compat.cc
// @brief Keeps the addon's glibc floor at 2.34 (Ubuntu 22.04, RHEL 9, Debian 12) although it is built
// on glibc 2.36 with a static libstdc++.
//
// libstdc++.a's random.o (std::random_device, pulled in through cow-string-inst.o even though
// facecuda never draws from it) calls arc4random, which glibc only exports since 2.36. Defining it
// here, in an object file of the addon itself, resolves that reference before libc.so is searched,
// so the .node file imports no GLIBC_2.36 symbol. The definition is a plain, correct arc4random
// (getrandom, available since glibc 2.25); with -Wl,--exclude-libs,ALL and hidden visibility it is
// not exported, so it never interposes on the process's own arc4random.
// The unwinder's _dl_find_object (GLIBC_2.35) is avoided by linking libgcc_s dynamically
// (CMakeLists.txt). scripts/prebuild.js records the measured floor in prebuilds/<platform>/facecuda.json.
#include <sys/random.h>

#include <time.h>

#include <cerrno>
#include <cstdint>

extern "C" __attribute__((visibility("hidden"))) uint32_t arc4random(void) {
  uint32_t v = 0;
  size_t got = 0;
  while (got < sizeof v) {
    const ssize_t n = getrandom(reinterpret_cast<char*>(&v) + got, sizeof v - got, 0);
    if (n > 0) got += static_cast<size_t>(n);
    else if (n < 0 && errno != EINTR) break;  // no getrandom (Linux < 3.17): never abort, degrade
  }
  if (got < sizeof v) {  // not reached on supported kernels; facecuda itself never draws from it
    timespec t{};
    clock_gettime(CLOCK_MONOTONIC, &t);
    v ^= static_cast<uint32_t>(t.tv_nsec) * 2654435761u ^ static_cast<uint32_t>(t.tv_sec);
  }
  return v;
}
