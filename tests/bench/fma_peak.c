/* The FMA bound of one core, measured: a tight loop of independent 256-bit (AVX2) fused
 * multiply-adds, and the same with 512-bit ones where the CPU has AVX-512F. Twelve accumulators
 * cover the FMA latency (4 to 5 cycles) on two FMA units, so the loop runs at the core's peak;
 * that peak divided by 2 units x 8 lanes x 2 FLOPs is the clock the core ran at.
 * Each figure is the best of three runs of SECONDS, so a moment of sharing the core is not
 * taken for its speed. tests/bench/model.sh builds it with -O2 -mavx2 -mfma.
 * usage: fma_peak SECONDS -> "avx2 GFLOPS" and, with AVX-512F, "avx512 GFLOPS" */
#include <immintrin.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#define ACCS 12
#define INNER 100000L

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* The sums are used (tested, printed if zero) so the compiler cannot drop the loop. */
static double avx2_gflops(double seconds) {
  __m256 acc[ACCS];
  const __m256 a = _mm256_set1_ps(0.999999f), b = _mm256_set1_ps(1e-6f);
  for (int i = 0; i < ACCS; i++) acc[i] = _mm256_set1_ps((float)i);
  long loops = 0;
  double t0 = now(), t;
  do {
    for (long n = 0; n < INNER; n++)
#pragma GCC unroll 12
      for (int i = 0; i < ACCS; i++) acc[i] = _mm256_fmadd_ps(acc[i], a, b);
    loops++;
  } while ((t = now() - t0) < seconds);
  float sink[8], total = 0;
  for (int i = 0; i < ACCS; i++) {
    _mm256_storeu_ps(sink, acc[i]);
    total += sink[0];
  }
  if (total == 0) fprintf(stderr, "avx2 sum %g\n", total);
  return (double)loops * INNER * ACCS * 8 * 2 / t / 1e9;
}

__attribute__((target("avx512f"))) static double avx512_gflops(double seconds) {
  __m512 acc[ACCS];
  const __m512 a = _mm512_set1_ps(0.999999f), b = _mm512_set1_ps(1e-6f);
  for (int i = 0; i < ACCS; i++) acc[i] = _mm512_set1_ps((float)i);
  long loops = 0;
  double t0 = now(), t;
  do {
    for (long n = 0; n < INNER; n++)
#pragma GCC unroll 12
      for (int i = 0; i < ACCS; i++) acc[i] = _mm512_fmadd_ps(acc[i], a, b);
    loops++;
  } while ((t = now() - t0) < seconds);
  float total = 0;
  for (int i = 0; i < ACCS; i++) total += _mm512_reduce_add_ps(acc[i]);
  if (total == 0) fprintf(stderr, "avx512 sum %g\n", total);
  return (double)loops * INNER * ACCS * 16 * 2 / t / 1e9;
}

static double best_of_three(double (*loop)(double), double seconds) {
  double best = 0;
  for (int i = 0; i < 3; i++) {
    double g = loop(seconds);
    if (g > best) best = g;
  }
  return best;
}

int main(int argc, char **argv) {
  double seconds = argc > 1 ? atof(argv[1]) : 0.3;
  __builtin_cpu_init();
  if (!__builtin_cpu_supports("avx2") || !__builtin_cpu_supports("fma")) {
    fprintf(stderr, "fma_peak: this CPU has no AVX2 with FMA\n");
    return 1;
  }
  printf("avx2 %.1f\n", best_of_three(avx2_gflops, seconds));
  if (__builtin_cpu_supports("avx512f")) printf("avx512 %.1f\n", best_of_three(avx512_gflops, seconds));
  return 0;
}
