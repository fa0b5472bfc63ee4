/*
 * One row times one packed panel: the product the small-batch kernels (gemm.c, one row at a
 * time) and the fused LSTM step (kernels.c) both stream. A panel is 64 columns of K weights,
 * k-major (w[k * 64 + column]), as dc_nn_pack and dc_nn_pack_lstm lay them out; a is the
 * row, K values. The sums come out as 8 (AVX2) or 4 (AVX-512) vectors of consecutive columns.
 * Include after <immintrin.h>, on x86-64 with GCC or Clang only.
 */
#ifndef DCONN_NN_PANEL_H
#define DCONN_NN_PANEL_H

#define DC_PANEL 64 /* columns in a packed panel */

/* Eight accumulators, one per 8 columns: independent FMA chains, named so that they stay in
 * registers (an array indexed in the loop would live on the stack). */
__attribute__((target("avx2,fma"), always_inline)) static inline void dc_panel_row_avx2(int K, const float *a,
                                                                                        const float *w, __m256 *out) {
  __m256 x0 = _mm256_setzero_ps(), x1 = x0, x2 = x0, x3 = x0, x4 = x0, x5 = x0, x6 = x0, x7 = x0;
  for (int k = 0; k < K; k++, w += DC_PANEL) {
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
  out[0] = x0, out[1] = x1, out[2] = x2, out[3] = x3, out[4] = x4, out[5] = x5, out[6] = x6, out[7] = x7;
}

/* Four 16-column groups, K split in two (even and odd k) so that eight FMA chains run. */
__attribute__((target("avx512f"), always_inline)) static inline void dc_panel_row_avx512(int K, const float *a,
                                                                                         const float *w, __m512 *out) {
  __m512 x0 = _mm512_setzero_ps(), x1 = x0, x2 = x0, x3 = x0, y0 = x0, y1 = x0, y2 = x0, y3 = x0;
  int k = 0;
  for (; k + 2 <= K; k += 2, w += 2 * DC_PANEL) {
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
  out[0] = _mm512_add_ps(x0, y0), out[1] = _mm512_add_ps(x1, y1);
  out[2] = _mm512_add_ps(x2, y2), out[3] = _mm512_add_ps(x3, y3);
}

#endif
