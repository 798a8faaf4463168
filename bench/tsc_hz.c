/* Prints the TSC frequency in Hz, measured: rdtsc against CLOCK_MONOTONIC_RAW over 200 ms, the
 * best (median) of 5 tries. ci/bench turns a packet rate into cycles per packet with it; on
 * constant_tsc machines this is the rate DPDK's rte_rdtsc() counts at. x86-64 only. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <x86intrin.h>

static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC_RAW, &t);
  return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

static int cmp(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

int main(void) {
  double hz[5];
  for (int i = 0; i < 5; i++) {
    struct timespec nap = {0, 200 * 1000 * 1000};
    double t0 = now();
    uint64_t c0 = __rdtsc();
    nanosleep(&nap, NULL);
    uint64_t c1 = __rdtsc();
    double t1 = now();
    hz[i] = (double)(c1 - c0) / (t1 - t0);
  }
  qsort(hz, 5, sizeof hz[0], cmp);
  printf("%.0f\n", hz[2]);
  return 0;
}
