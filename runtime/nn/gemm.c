/*
 * Small-M matrix products for the recurrent steps of small batches (see nn.h).
 *
 * At batch 1 each LSTM step multiplies one 128-vector by a 512 x 128 matrix: 256 KB of weights
 * read from L2 for 131 kFLOP. OpenBLAS (as configured here: Haswell kernels) spends about
 * 2.9 us on that as sgemv and more as sgemm, packing its operands every call; the weights never
 * change, so we pack them once at load time into 64-column panels (Wp[N/64][K][64], zero
 * padded) and stream each panel with FMAs. Up to 64 rows this also beats OpenBLAS's sgemm,
 * which packs A and B on every call; large batches keep using cblas_sgemm (nn.c).
 *
 * Two instruction sets, one panel layout. AVX-512: rows four at a time times a whole panel (16
 * accumulators); one row gets a two-way split over K so the FMA chains stay independent. AVX2
 * (16 registers of 8 lanes): one row times a whole panel (8 accumulators), or six rows times a
 * quarter panel (12 accumulators, 2 weight registers, the broadcast).
 */
#include <stdlib.h>
#include <string.h>

#include "nn.h"

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define HAVE_X86 1
#define AVX512 __attribute__((target("avx512f")))
#define AVX2 __attribute__((target("avx2,fma")))
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

#ifdef HAVE_X86
enum { NONE, WITH_AVX2, WITH_AVX512 };
static int isa;

/* First called from luaopen (the loop thread). DCONN_NN_KERNELS=blas or libm turns it off,
 * leaving every product to BLAS (the benchmark compares both); =avx2 stops at AVX2, as on a CPU
 * without AVX-512. */
bool dc_nn_small_gemm_available(void) {
  static bool checked;
  if (!checked) {
    const char *force = getenv("DCONN_NN_KERNELS");
    __builtin_cpu_init();
    bool off = force && (!strcmp(force, "blas") || !strcmp(force, "libm"));
    bool avx2_only = force && !strcmp(force, "avx2");
    if (off) isa = NONE;
    else if (__builtin_cpu_supports("avx512f") && !avx2_only) isa = WITH_AVX512;
    else if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) isa = WITH_AVX2;
    checked = true;
  }
  return isa != NONE;
}

const char *dc_nn_small_gemm_name(void) {
  dc_nn_small_gemm_available();
  return isa == WITH_AVX512 ? "avx512" : isa == WITH_AVX2 ? "avx2" : "none";
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
static void small_gemm_avx512(int M, int N, int K, const float *A, int lda, const float *Wp, float beta, float *C,
                              int ldc) {
  if (M == 1) {
    one_row(N, K, A, Wp, beta, C);
    return;
  }
  for (int n0 = 0; n0 < N; n0 += PANEL)
    for (int m = 0; m < M; m += 4)
      four_rows(M - m < 4 ? M - m : 4, N, n0, K, A + (size_t)m * lda, lda, Wp + (size_t)n0 * K, beta,
                C + (size_t)m * ldc, ldc);
}

/* ---- AVX2 ---- */

/* The lanes of 8-column group j from column c0 that are inside N, as a maskstore mask. */
AVX2 static __m256i lanes8(int N, int c0, int j) {
  return _mm256_cmpgt_epi32(_mm256_set1_epi32(N - c0 - 8 * j), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

/* c[c0 .. c0 + 8) (masked to N) = v (+ what is there with beta). */
AVX2 static void store8(float *c, int N, int c0, int j, __m256 v, float beta) {
  float *p = c + c0 + 8 * j;
  if (N - c0 - 8 * j >= 8) {
    _mm256_storeu_ps(p, beta != 0 ? _mm256_add_ps(v, _mm256_loadu_ps(p)) : v);
    return;
  }
  __m256i m = lanes8(N, c0, j);
  if (beta != 0) v = _mm256_add_ps(v, _mm256_maskload_ps(p, m));
  _mm256_maskstore_ps(p, m, v);
}

AVX2 static void one_row_avx2(int N, int K, const float *a, const float *Wp, float beta, float *c) {
  for (int n0 = 0; n0 < N; n0 += PANEL) {
    const float *w = Wp + (size_t)n0 * K;
    /* named accumulators: an array indexed in a loop would live on the stack */
    __m256 x0 = _mm256_setzero_ps(), x1 = x0, x2 = x0, x3 = x0, x4 = x0, x5 = x0, x6 = x0, x7 = x0;
    for (int k = 0; k < K; k++, w += PANEL) {
      __m256 p = _mm256_broadcast_ss(a + k);
      x0 = _mm256_fmadd_ps(_mm256_loadu_ps(w), p, x0);
      x1 = _mm256_fmadd_ps(_mm256_loadu_ps(w + 8), p, x1);
      x2 = _mm256_fmadd_ps(_mm256_loadu_ps(w + 16), p, x2);
      x3 = _mm256_fmadd_ps(_mm256_loadu_ps(w + 24), p, x3);
      x4 = _mm256_fmadd_ps(_mm256_loadu_ps(w + 32), p, x4);
      x5 = _mm256_fmadd_ps(_mm256_loadu_ps(w + 40), p, x5);
      x6 = _mm256_fmadd_ps(_mm256_loadu_ps(w + 48), p, x6);
      x7 = _mm256_fmadd_ps(_mm256_loadu_ps(w + 56), p, x7);
    }
    __m256 acc[8] = {x0, x1, x2, x3, x4, x5, x6, x7};
    for (int j = 0; j < 8 && n0 + 8 * j < N; j++) store8(c, N, n0, j, acc[j], beta);
  }
}

/* Six rows (a row index past M repeats row 0 and is not stored) times the 16 columns from c0,
 * w pointing at their first weights in the panel: 12 accumulators, 2 weight registers and the
 * broadcast fill the 16 registers, so every weight is loaded once per k (three rows times 32
 * columns would need 17, and the compiler then reloads weights from memory for each row). */
AVX2 static void six_rows(int rows, int N, int c0, int K, const float *A, int lda, const float *w, float beta, float *C,
                          int ldc) {
  const float *a[6];
  for (int r = 0; r < 6; r++) a[r] = A + (size_t)(r < rows ? r : 0) * lda;
  const float *a0 = a[0], *a1 = a[1], *a2 = a[2], *a3 = a[3], *a4 = a[4], *a5 = a[5];
  __m256 r0x = _mm256_setzero_ps(), r0y = r0x, r1x = r0x, r1y = r0x, r2x = r0x, r2y = r0x;
  __m256 r3x = r0x, r3y = r0x, r4x = r0x, r4y = r0x, r5x = r0x, r5y = r0x;
  for (int k = 0; k < K; k++, w += PANEL) {
    __m256 wx = _mm256_loadu_ps(w), wy = _mm256_loadu_ps(w + 8);
    __m256 p = _mm256_broadcast_ss(a0 + k);
    r0x = _mm256_fmadd_ps(wx, p, r0x), r0y = _mm256_fmadd_ps(wy, p, r0y);
    p = _mm256_broadcast_ss(a1 + k);
    r1x = _mm256_fmadd_ps(wx, p, r1x), r1y = _mm256_fmadd_ps(wy, p, r1y);
    p = _mm256_broadcast_ss(a2 + k);
    r2x = _mm256_fmadd_ps(wx, p, r2x), r2y = _mm256_fmadd_ps(wy, p, r2y);
    p = _mm256_broadcast_ss(a3 + k);
    r3x = _mm256_fmadd_ps(wx, p, r3x), r3y = _mm256_fmadd_ps(wy, p, r3y);
    p = _mm256_broadcast_ss(a4 + k);
    r4x = _mm256_fmadd_ps(wx, p, r4x), r4y = _mm256_fmadd_ps(wy, p, r4y);
    p = _mm256_broadcast_ss(a5 + k);
    r5x = _mm256_fmadd_ps(wx, p, r5x), r5y = _mm256_fmadd_ps(wy, p, r5y);
  }
  __m256 acc[6][2] = {{r0x, r0y}, {r1x, r1y}, {r2x, r2y}, {r3x, r3y}, {r4x, r4y}, {r5x, r5y}};
  for (int r = 0; r < rows; r++)
    for (int j = 0; j < 2 && c0 + 8 * j < N; j++) store8(C + (size_t)r * ldc, N, c0, j, acc[r][j], beta);
}

/* Panels outside, then 16-column quarters (16 x K floats, 8 KB at K = 128, kept in L1 while
 * every group of six rows passes over them). */
static void small_gemm_avx2(int M, int N, int K, const float *A, int lda, const float *Wp, float beta, float *C,
                            int ldc) {
  if (M == 1) {
    one_row_avx2(N, K, A, Wp, beta, C);
    return;
  }
  for (int n0 = 0; n0 < N; n0 += PANEL)
    for (int q = 0; q < PANEL && n0 + q < N; q += 16)
      for (int m = 0; m < M; m += 6)
        six_rows(M - m < 6 ? M - m : 6, N, n0 + q, K, A + (size_t)m * lda, lda, Wp + (size_t)n0 * K + q, beta,
                 C + (size_t)m * ldc, ldc);
}

void dc_nn_small_gemm(int M, int N, int K, const float *A, int lda, const float *Wp, float beta, float *C, int ldc) {
  if (isa == WITH_AVX512) small_gemm_avx512(M, N, K, A, lda, Wp, beta, C, ldc);
  else small_gemm_avx2(M, N, K, A, lda, Wp, beta, C, ldc);
}
#else
bool dc_nn_small_gemm_available(void) { return false; }
const char *dc_nn_small_gemm_name(void) { return "none"; }
void dc_nn_small_gemm(int M, int N, int K, const float *A, int lda, const float *Wp, float beta, float *C, int ldc) {
  (void)M, (void)N, (void)K, (void)A, (void)lda, (void)Wp, (void)beta, (void)C, (void)ldc;
}
#endif
