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
 * (16 registers of 8 lanes): one row times a whole panel (8 accumulators), or a tile of up to
 * six rows times a quarter panel (12 accumulators, 2 weight registers, the broadcast), the rows
 * split evenly over the tiles.
 */
#include <stdlib.h>
#include <string.h>

#include "nn.h"

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define HAVE_X86 1
#define AVX512 __attribute__((target("avx512f")))
#define AVX2 __attribute__((target("avx2,fma")))
#include "panel.h"
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

void dc_nn_pack_lstm(const float *W, int H, int K, float *Wp) {
  for (int n = 0; n < 4 * H; n++) { /* packed column n: gate (n % 64) / 16 of unit 16 (n / 64) + n % 16 */
    const float *row = W + ((size_t)(n % PANEL / 16) * H + (size_t)(n / PANEL) * 16 + n % 16) * K;
    float *panel = Wp + (size_t)(n / PANEL) * PANEL * K + n % PANEL;
    for (int k = 0; k < K; k++) panel[(size_t)k * PANEL] = row[k];
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
    __m512 acc[4];
    dc_panel_row_avx512(K, a, Wp + (size_t)n0 * K, acc);
    for (int j = 0; j < 4; j++) {
      __mmask16 m = lanes(N, n0, j);
      if (!m) break;
      __m512 v = beta != 0 ? _mm512_add_ps(acc[j], _mm512_maskz_loadu_ps(m, c + n0 + 16 * j)) : acc[j];
      _mm512_mask_storeu_ps(c + n0 + 16 * j, m, v);
    }
  }
}

/* R rows (R <= 6, a constant where it is inlined) times one 64-column panel: 4R accumulators,
 * the 4 weight registers and the broadcast fit the 32 registers. The loops over rows unroll
 * fully, so the accumulators are registers. */
#define EACH_ROW16 _Pragma("GCC unroll 6") for (int r = 0; r < R; r++)
AVX512 static inline __attribute__((always_inline)) void
rows_panel(int R, int N, int n0, int K, const float *A, int lda, const float *w, float beta, float *C, int ldc) {
  __m512 c0[6], c1[6], c2[6], c3[6];
  EACH_ROW16 c0[r] = c1[r] = c2[r] = c3[r] = _mm512_setzero_ps();
  for (int k = 0; k < K; k++, w += PANEL) {
    __m512 w0 = _mm512_loadu_ps(w), w1 = _mm512_loadu_ps(w + 16), w2 = _mm512_loadu_ps(w + 32),
           w3 = _mm512_loadu_ps(w + 48);
    EACH_ROW16 {
      __m512 p = _mm512_set1_ps(A[(size_t)r * lda + k]);
      c0[r] = _mm512_fmadd_ps(w0, p, c0[r]), c1[r] = _mm512_fmadd_ps(w1, p, c1[r]);
      c2[r] = _mm512_fmadd_ps(w2, p, c2[r]), c3[r] = _mm512_fmadd_ps(w3, p, c3[r]);
    }
  }
  EACH_ROW16 {
    float *c = C + (size_t)r * ldc + n0;
    __m512 acc[4] = {c0[r], c1[r], c2[r], c3[r]};
    for (int j = 0; j < 4; j++) {
      __mmask16 m = lanes(N, n0, j);
      if (!m) break;
      __m512 v = beta != 0 ? _mm512_add_ps(acc[j], _mm512_maskz_loadu_ps(m, c + 16 * j)) : acc[j];
      _mm512_mask_storeu_ps(c + 16 * j, m, v);
    }
  }
}

AVX512 static void panel_rows(int rows, int N, int n0, int K, const float *A, int lda, const float *w, float beta,
                              float *C, int ldc) {
  switch (rows) {
  case 6: rows_panel(6, N, n0, K, A, lda, w, beta, C, ldc); break;
  case 5: rows_panel(5, N, n0, K, A, lda, w, beta, C, ldc); break;
  case 4: rows_panel(4, N, n0, K, A, lda, w, beta, C, ldc); break;
  case 3: rows_panel(3, N, n0, K, A, lda, w, beta, C, ldc); break;
  case 2: rows_panel(2, N, n0, K, A, lda, w, beta, C, ldc); break;
  default: rows_panel(1, N, n0, K, A, lda, w, beta, C, ldc); break;
  }
}

/* Rows in tile t of M rows split as evenly as can be over `tiles` tiles of at most six. */
static int tile_rows_of(int M, int tiles, int m, int t) { return (M - m) / (tiles - t) + ((M - m) % (tiles - t) != 0); }

/* Panels outside, row tiles inside: a panel (64 x K floats, 32 KB at K = 128) is read from L2
 * once and then served from L1 to every tile of rows. The rows are split evenly into tiles of
 * at most six (6 rows: one tile; 10: 5 + 5), so no tile computes rows it throws away. */
static void small_gemm_avx512(int M, int N, int K, const float *A, int lda, const float *Wp, float beta, float *C,
                              int ldc) {
  if (M == 1) {
    one_row(N, K, A, Wp, beta, C);
    return;
  }
  int tiles = (M + 5) / 6;
  for (int n0 = 0; n0 < N; n0 += PANEL)
    for (int t = 0, m = 0; t < tiles; t++) {
      int rows = tile_rows_of(M, tiles, m, t);
      panel_rows(rows, N, n0, K, A + (size_t)m * lda, lda, Wp + (size_t)n0 * K, beta, C + (size_t)m * ldc, ldc);
      m += rows;
    }
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
    __m256 acc[8];
    dc_panel_row_avx2(K, a, Wp + (size_t)n0 * K, acc);
    for (int j = 0; j < 8 && n0 + 8 * j < N; j++) store8(c, N, n0, j, acc[j], beta);
  }
}

/* R rows (R <= 6, a constant where it is inlined) times the 16 columns from c0, w pointing at
 * their first weights in the panel: 2R accumulators, 2 weight registers and the broadcast fit
 * the 16 registers, so every weight is loaded once per k (three rows times 32 columns would
 * need 17, and the compiler then reloads weights from memory for each row). The loops over
 * rows unroll fully, so the accumulators are registers. */
#define EACH_ROW _Pragma("GCC unroll 6") for (int r = 0; r < R; r++)
AVX2 static inline __attribute__((always_inline)) void rows_tile(int R, int N, int c0, int K, const float *A, int lda,
                                                                 const float *w, float beta, float *C, int ldc) {
  __m256 x[6], y[6];
  EACH_ROW x[r] = y[r] = _mm256_setzero_ps();
  for (int k = 0; k < K; k++, w += PANEL) {
    __m256 wx = _mm256_loadu_ps(w), wy = _mm256_loadu_ps(w + 8);
    EACH_ROW {
      __m256 p = _mm256_broadcast_ss(A + (size_t)r * lda + k);
      x[r] = _mm256_fmadd_ps(wx, p, x[r]), y[r] = _mm256_fmadd_ps(wy, p, y[r]);
    }
  }
  EACH_ROW {
    store8(C + (size_t)r * ldc, N, c0, 0, x[r], beta);
    if (c0 + 8 < N) store8(C + (size_t)r * ldc, N, c0, 1, y[r], beta);
  }
}

AVX2 static void tile_rows(int rows, int N, int c0, int K, const float *A, int lda, const float *w, float beta,
                           float *C, int ldc) {
  switch (rows) {
  case 6: rows_tile(6, N, c0, K, A, lda, w, beta, C, ldc); break;
  case 5: rows_tile(5, N, c0, K, A, lda, w, beta, C, ldc); break;
  case 4: rows_tile(4, N, c0, K, A, lda, w, beta, C, ldc); break;
  case 3: rows_tile(3, N, c0, K, A, lda, w, beta, C, ldc); break;
  case 2: rows_tile(2, N, c0, K, A, lda, w, beta, C, ldc); break;
  default: rows_tile(1, N, c0, K, A, lda, w, beta, C, ldc); break;
  }
}

/* Panels outside, then 16-column quarters (16 x K floats, 8 KB at K = 128, kept in L1 while
 * every tile of rows passes over them). The rows are split into tiles of at most six, as even
 * as can be (10 rows: 5 + 5), so no tile computes rows it throws away. */
static void small_gemm_avx2(int M, int N, int K, const float *A, int lda, const float *Wp, float beta, float *C,
                            int ldc) {
  if (M == 1) {
    one_row_avx2(N, K, A, Wp, beta, C);
    return;
  }
  int tiles = (M + 5) / 6;
  for (int n0 = 0; n0 < N; n0 += PANEL)
    for (int q = 0; q < PANEL && n0 + q < N; q += 16)
      for (int t = 0, m = 0; t < tiles; t++) {
        int rows = tile_rows_of(M, tiles, m, t);
        tile_rows(rows, N, n0 + q, K, A + (size_t)m * lda, lda, Wp + (size_t)n0 * K + q, beta, C + (size_t)m * ldc,
                  ldc);
        m += rows;
      }
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
