/*
 * Small-M matrix products for the recurrent steps of small batches (see nn.h).
 *
 * At batch 1 each LSTM step multiplies one 128-vector by a 512 x 128 matrix: 256 KB of weights
 * read from L2 for 131 kFLOP. OpenBLAS (as configured here: Haswell kernels) spends about
 * 2.9 us on that as sgemv and more as sgemm, packing its operands every call; the weights never
 * change, so we pack them once at load time into 64-column panels (Wp[N/64][K][64], zero
 * padded) and stream each panel with AVX-512 FMAs: about 1.3 us, close to L2 bandwidth. Rows
 * are taken four at a time (16 accumulators); one row gets a two-way split over K instead so
 * the FMA chains stay independent. Up to 64 rows this also beats OpenBLAS's Haswell sgemm, which
 * packs A and B on every call; large batches keep using cblas_sgemm (nn.c).
 */
#include <stdlib.h>
#include <string.h>

#include "nn.h"

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define HAVE_AVX512 1
#define AVX512 __attribute__((target("avx512f")))
#endif

#define PANEL 64

size_t dc_nn_packed_floats(int N, int K) { return (size_t)((N + PANEL - 1) / PANEL) * PANEL * (size_t)K; }

void dc_nn_pack(const float *W, int N, int K, float *Wp) {
  memset(Wp, 0, dc_nn_packed_floats(N, K) * sizeof(float));
  for (int n = 0; n < N; n++) {
    float *panel = Wp + (size_t)(n / PANEL) * PANEL * K + n % PANEL;
    for (int k = 0; k < K; k++) panel[(size_t)k * PANEL] = W[(size_t)n * K + k];
  }
}

#ifdef HAVE_AVX512
static bool avx512;

/* First called from luaopen (the loop thread). DCONN_NN_KERNELS=blas or libm turns it off,
 * leaving every product to BLAS (the benchmark compares both). */
bool dc_nn_small_gemm_available(void) {
  static bool checked;
  if (!checked) {
    const char *force = getenv("DCONN_NN_KERNELS");
    __builtin_cpu_init();
    avx512 = __builtin_cpu_supports("avx512f") && !(force && (!strcmp(force, "blas") || !strcmp(force, "libm")));
    checked = true;
  }
  return avx512;
}

/* Lanes of 16-column group j of a panel starting at column n0 that are inside N. */
static __mmask16 lanes(int N, int n0, int j) {
  int valid = N - n0 - 16 * j;
  return valid >= 16 ? (__mmask16)0xFFFF : valid <= 0 ? (__mmask16)0 : (__mmask16)((1u << valid) - 1);
}

AVX512 static void one_row(int N, int K, const float *a, const float *Wp, float beta, float *c) {
  for (int n0 = 0; n0 < N; n0 += PANEL) {
    const float *w = Wp + (size_t)n0 * K;
    __m512 x0 = _mm512_setzero_ps(), x1 = x0, x2 = x0, x3 = x0, y0 = x0, y1 = x0, y2 = x0, y3 = x0;
    int k = 0;
    for (; k + 2 <= K; k += 2, w += 2 * PANEL) {
      __m512 p = _mm512_set1_ps(a[k]), q = _mm512_set1_ps(a[k + 1]);
      x0 = _mm512_fmadd_ps(_mm512_loadu_ps(w), p, x0);
      x1 = _mm512_fmadd_ps(_mm512_loadu_ps(w + 16), p, x1);
      x2 = _mm512_fmadd_ps(_mm512_loadu_ps(w + 32), p, x2);
      x3 = _mm512_fmadd_ps(_mm512_loadu_ps(w + 48), p, x3);
      y0 = _mm512_fmadd_ps(_mm512_loadu_ps(w + 64), q, y0);
      y1 = _mm512_fmadd_ps(_mm512_loadu_ps(w + 80), q, y1);
      y2 = _mm512_fmadd_ps(_mm512_loadu_ps(w + 96), q, y2);
      y3 = _mm512_fmadd_ps(_mm512_loadu_ps(w + 112), q, y3);
    }
    if (k < K) {
      __m512 p = _mm512_set1_ps(a[k]);
      x0 = _mm512_fmadd_ps(_mm512_loadu_ps(w), p, x0);
      x1 = _mm512_fmadd_ps(_mm512_loadu_ps(w + 16), p, x1);
      x2 = _mm512_fmadd_ps(_mm512_loadu_ps(w + 32), p, x2);
      x3 = _mm512_fmadd_ps(_mm512_loadu_ps(w + 48), p, x3);
    }
    __m512 acc[4] = {_mm512_add_ps(x0, y0), _mm512_add_ps(x1, y1), _mm512_add_ps(x2, y2), _mm512_add_ps(x3, y3)};
    for (int j = 0; j < 4; j++) {
      __mmask16 m = lanes(N, n0, j);
      if (!m) break;
      __m512 v = beta != 0 ? _mm512_add_ps(acc[j], _mm512_maskz_loadu_ps(m, c + n0 + 16 * j)) : acc[j];
      _mm512_mask_storeu_ps(c + n0 + 16 * j, m, v);
    }
  }
}

/* Four rows (a row index past M repeats row 0 and is not stored) times one 64-column panel. */
AVX512 static void four_rows(int rows, int N, int n0, int K, const float *A, int lda, const float *w, float beta,
                             float *C, int ldc) {
  const float *a0 = A, *a1 = rows > 1 ? A + lda : A, *a2 = rows > 2 ? A + 2 * (size_t)lda : A;
  const float *a3 = rows > 3 ? A + 3 * (size_t)lda : A;
  __m512 r0c0 = _mm512_setzero_ps(), r0c1 = r0c0, r0c2 = r0c0, r0c3 = r0c0;
  __m512 r1c0 = r0c0, r1c1 = r0c0, r1c2 = r0c0, r1c3 = r0c0, r2c0 = r0c0, r2c1 = r0c0, r2c2 = r0c0, r2c3 = r0c0;
  __m512 r3c0 = r0c0, r3c1 = r0c0, r3c2 = r0c0, r3c3 = r0c0;
  for (int k = 0; k < K; k++, w += PANEL) {
    __m512 w0 = _mm512_loadu_ps(w), w1 = _mm512_loadu_ps(w + 16), w2 = _mm512_loadu_ps(w + 32),
           w3 = _mm512_loadu_ps(w + 48);
    __m512 p = _mm512_set1_ps(a0[k]);
    r0c0 = _mm512_fmadd_ps(w0, p, r0c0), r0c1 = _mm512_fmadd_ps(w1, p, r0c1);
    r0c2 = _mm512_fmadd_ps(w2, p, r0c2), r0c3 = _mm512_fmadd_ps(w3, p, r0c3);
    p = _mm512_set1_ps(a1[k]);
    r1c0 = _mm512_fmadd_ps(w0, p, r1c0), r1c1 = _mm512_fmadd_ps(w1, p, r1c1);
    r1c2 = _mm512_fmadd_ps(w2, p, r1c2), r1c3 = _mm512_fmadd_ps(w3, p, r1c3);
    p = _mm512_set1_ps(a2[k]);
    r2c0 = _mm512_fmadd_ps(w0, p, r2c0), r2c1 = _mm512_fmadd_ps(w1, p, r2c1);
    r2c2 = _mm512_fmadd_ps(w2, p, r2c2), r2c3 = _mm512_fmadd_ps(w3, p, r2c3);
    p = _mm512_set1_ps(a3[k]);
    r3c0 = _mm512_fmadd_ps(w0, p, r3c0), r3c1 = _mm512_fmadd_ps(w1, p, r3c1);
    r3c2 = _mm512_fmadd_ps(w2, p, r3c2), r3c3 = _mm512_fmadd_ps(w3, p, r3c3);
  }
  __m512 acc[4][4] = {
      {r0c0, r0c1, r0c2, r0c3}, {r1c0, r1c1, r1c2, r1c3}, {r2c0, r2c1, r2c2, r2c3}, {r3c0, r3c1, r3c2, r3c3}};
  for (int r = 0; r < rows; r++) {
    float *c = C + (size_t)r * ldc + n0;
    for (int j = 0; j < 4; j++) {
      __mmask16 m = lanes(N, n0, j);
      if (!m) break;
      __m512 v = beta != 0 ? _mm512_add_ps(acc[r][j], _mm512_maskz_loadu_ps(m, c + 16 * j)) : acc[r][j];
      _mm512_mask_storeu_ps(c + 16 * j, m, v);
    }
  }
}

/* Panels outside, row tiles inside: a panel (64 x K floats, 32 KB at K = 128) is read from L2
 * once and then served from L1 to every tile of rows. */
void dc_nn_small_gemm(int M, int N, int K, const float *A, int lda, const float *Wp, float beta, float *C, int ldc) {
  if (M == 1) {
    one_row(N, K, A, Wp, beta, C);
    return;
  }
  for (int n0 = 0; n0 < N; n0 += PANEL)
    for (int m = 0; m < M; m += 4)
      four_rows(M - m < 4 ? M - m : 4, N, n0, K, A + (size_t)m * lda, lda, Wp + (size_t)n0 * K, beta,
                C + (size_t)m * ldc, ldc);
}
#else
bool dc_nn_small_gemm_available(void) { return false; }
void dc_nn_small_gemm(int M, int N, int K, const float *A, int lda, const float *Wp, float beta, float *C, int ldc) {
  (void)M, (void)N, (void)K, (void)A, (void)lda, (void)Wp, (void)beta, (void)C, (void)ldc;
}
#endif
