/*
 * Pointwise kernels of the forward pass: sigmoid, tanh and the fused LSTM/GRU cell updates.
 *
 * An LSTM window of the original model evaluates 25,600 sigmoids and tanhs; with libm's expf
 * one at a time that alone costs more than the matrix work at batch 1. The AVX2+FMA versions
 * (and AVX-512) versions evaluate 8 (16) lanes with a Cephes-style expf (range reduction by ln 2, degree-5 polynomial,
 * about 1 ulp), then sigmoid(x) = 1 / (1 + e^-x) and tanh(x) = (1 - e^-2x) / (1 + e^-2x);
 * absolute errors stay near 1e-7, far inside the 1e-5 parity budget. They are chosen at run
 * time, so the binary still runs on CPUs without AVX2 (libm then).
 */
#include "nn.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#include "panel.h"
#define HAVE_X86 1
#endif

/* ---- portable versions ---- */

static float sigmoid1(float x) { return 1.0f / (1.0f + expf(-x)); }

static void sigmoid_c(float *x, size_t n) {
  for (size_t i = 0; i < n; i++) x[i] = sigmoid1(x[i]);
}

static void tanh_c(float *x, size_t n) {
  for (size_t i = 0; i < n; i++) x[i] = tanhf(x[i]);
}

static void lstm_cell_c(const float *g, const float *b, float *c, float *h, int H) {
  for (int j = 0; j < H; j++) {
    float i = sigmoid1(g[j] + b[j]), f = sigmoid1(g[H + j] + b[H + j]);
    float gg = tanhf(g[2 * H + j] + b[2 * H + j]), o = sigmoid1(g[3 * H + j] + b[3 * H + j]);
    c[j] = f * c[j] + i * gg;
    h[j] = o * tanhf(c[j]);
  }
}

static void gru_cell_c(const float *gx, const float *bx, const float *gh, const float *bhn, const float *hprev,
                       float *h, int H) {
  for (int j = 0; j < H; j++) {
    float hr = gh ? gh[j] : 0, hz = gh ? gh[H + j] : 0, hn = gh ? gh[2 * H + j] : 0, hp = hprev ? hprev[j] : 0;
    float r = sigmoid1(gx[j] + bx[j] + hr), z = sigmoid1(gx[H + j] + bx[H + j] + hz);
    float n = tanhf(gx[2 * H + j] + bx[2 * H + j] + r * (hn + bhn[j]));
    h[j] = (1.0f - z) * n + z * hp;
  }
}

#ifdef HAVE_X86
#define AVX __attribute__((target("avx2,fma")))

AVX static inline __m256 exp8(__m256 x) {
  x = _mm256_min_ps(_mm256_max_ps(x, _mm256_set1_ps(-87.0f)), _mm256_set1_ps(88.0f));
  __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                             _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);
  r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
  __m256 p = _mm256_set1_ps(1.9875691500e-4f);
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.3981999507e-3f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(8.3334519073e-3f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(4.1665795894e-2f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.6666665459e-1f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(5.0000001201e-1f));
  p = _mm256_fmadd_ps(p, _mm256_mul_ps(r, r), _mm256_add_ps(r, _mm256_set1_ps(1.0f)));
  __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
  return _mm256_mul_ps(p, _mm256_castsi256_ps(e));
}

/* 1 / d for d >= 1: the 12-bit estimate and one Newton step (relative error about 1e-7). A
 * division's throughput is a fifth of an FMA's, and an LSTM step does five per 8 lanes. */
AVX static inline __m256 recip8(__m256 d) {
  __m256 r = _mm256_rcp_ps(d);
  return _mm256_mul_ps(r, _mm256_fnmadd_ps(d, r, _mm256_set1_ps(2.0f)));
}

AVX static inline __m256 sigmoid8(__m256 x) {
  return recip8(_mm256_add_ps(_mm256_set1_ps(1.0f), exp8(_mm256_sub_ps(_mm256_setzero_ps(), x))));
}

/* tanh(x) = 2 sigmoid(2x) - 1 */
AVX static inline __m256 tanh8(__m256 x) {
  __m256 s = sigmoid8(_mm256_add_ps(x, x));
  return _mm256_fmsub_ps(s, _mm256_set1_ps(2.0f), _mm256_set1_ps(1.0f));
}

AVX static void sigmoid_avx(float *x, size_t n) {
  size_t i = 0;
  for (; i + 8 <= n; i += 8) _mm256_storeu_ps(x + i, sigmoid8(_mm256_loadu_ps(x + i)));
  sigmoid_c(x + i, n - i);
}

AVX static void tanh_avx(float *x, size_t n) {
  size_t i = 0;
  for (; i + 8 <= n; i += 8) _mm256_storeu_ps(x + i, tanh8(_mm256_loadu_ps(x + i)));
  tanh_c(x + i, n - i);
}

/* sigmoid8 of v[0..n) (tanh8, 2 sigmoid(2x) - 1, for those with is_tanh[u]; the same operations,
 * so the same results), each step taken for every vector before the next: n independent
 * chains side by side keep both FMA units busy, where one chain at a time mostly waits on
 * latency. n is a constant where it is inlined, so the loops unroll. */
#define ACT_STEP _Pragma("GCC unroll 16") for (int u = 0; u < n; u++)
AVX static inline __attribute__((always_inline)) void sigmoid8_lockstep(__m256 *v, const bool *is_tanh, int n) {
  __m256 x[16], k[16], r[16], p[16];
  ACT_STEP x[u] = is_tanh[u] ? _mm256_mul_ps(v[u], _mm256_set1_ps(-2.0f)) : _mm256_sub_ps(_mm256_setzero_ps(), v[u]);
  ACT_STEP x[u] = _mm256_min_ps(_mm256_max_ps(x[u], _mm256_set1_ps(-87.0f)), _mm256_set1_ps(88.0f));
  ACT_STEP k[u] = _mm256_round_ps(_mm256_mul_ps(x[u], _mm256_set1_ps(1.44269504088896341f)),
                                  _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  ACT_STEP r[u] = _mm256_fnmadd_ps(k[u], _mm256_set1_ps(0.693359375f), x[u]);
  ACT_STEP r[u] = _mm256_fnmadd_ps(k[u], _mm256_set1_ps(-2.12194440e-4f), r[u]);
  ACT_STEP p[u] = _mm256_fmadd_ps(_mm256_set1_ps(1.9875691500e-4f), r[u], _mm256_set1_ps(1.3981999507e-3f));
  ACT_STEP p[u] = _mm256_fmadd_ps(p[u], r[u], _mm256_set1_ps(8.3334519073e-3f));
  ACT_STEP p[u] = _mm256_fmadd_ps(p[u], r[u], _mm256_set1_ps(4.1665795894e-2f));
  ACT_STEP p[u] = _mm256_fmadd_ps(p[u], r[u], _mm256_set1_ps(1.6666665459e-1f));
  ACT_STEP p[u] = _mm256_fmadd_ps(p[u], r[u], _mm256_set1_ps(5.0000001201e-1f));
  ACT_STEP p[u] = _mm256_fmadd_ps(p[u], _mm256_mul_ps(r[u], r[u]), _mm256_add_ps(r[u], _mm256_set1_ps(1.0f)));
  ACT_STEP p[u] = _mm256_mul_ps(p[u], _mm256_castsi256_ps(_mm256_slli_epi32(
                                          _mm256_add_epi32(_mm256_cvtps_epi32(k[u]), _mm256_set1_epi32(127)), 23)));
  ACT_STEP v[u] = recip8(_mm256_add_ps(_mm256_set1_ps(1.0f), p[u]));
  ACT_STEP if (is_tanh[u]) v[u] = _mm256_fmsub_ps(v[u], _mm256_set1_ps(2.0f), _mm256_set1_ps(1.0f));
}

/* The cell of 8U units from their 4U gate vectors v (pre-activations with bias; gate-major, U
 * vectors a gate): their 16 gate activations in lockstep, then the U tanh(c). One unit's
 * activations in a row form a chain of about 150 cycles of latency, which left the core mostly
 * waiting (0.43 us per 128-unit step on Zen 4; 0.30 us so). */
AVX static inline __attribute__((always_inline)) void cell_units8(int U, __m256 *v, float *c, float *h) {
  __m256 cv[4];
  bool is_tanh[16], all_tanh[4];
  _Pragma("GCC unroll 16") for (int u = 0; u < 4 * U; u++) is_tanh[u] = u / U == 2;
  sigmoid8_lockstep(v, is_tanh, 4 * U);
  _Pragma("GCC unroll 16") for (int u = 0; u < U; u++) {
    cv[u] = _mm256_fmadd_ps(v[U + u], _mm256_loadu_ps(c + 8 * u), _mm256_mul_ps(v[u], v[2 * U + u]));
    _mm256_storeu_ps(c + 8 * u, cv[u]);
    all_tanh[u] = true;
  }
  sigmoid8_lockstep(cv, all_tanh, U);
  _Pragma("GCC unroll 16") for (int u = 0; u < U; u++) _mm256_storeu_ps(h + 8 * u, _mm256_mul_ps(v[3 * U + u], cv[u]));
}

AVX static void lstm_cell_avx(const float *g, const float *b, float *c, float *h, int H) {
  int j = 0;
  enum { U = 4 };
  for (; j + 8 * U <= H; j += 8 * U) {
    __m256 v[4 * U];
    _Pragma("GCC unroll 16") for (int u = 0; u < 4 * U; u++) {
      const int off = u / U * H + j + 8 * (u % U);
      v[u] = _mm256_add_ps(_mm256_loadu_ps(g + off), _mm256_loadu_ps(b + off));
    }
    cell_units8(U, v, c + j, h + j);
  }
  for (; j + 8 <= H; j += 8) {
    __m256 i = sigmoid8(_mm256_add_ps(_mm256_loadu_ps(g + j), _mm256_loadu_ps(b + j)));
    __m256 f = sigmoid8(_mm256_add_ps(_mm256_loadu_ps(g + H + j), _mm256_loadu_ps(b + H + j)));
    __m256 gg = tanh8(_mm256_add_ps(_mm256_loadu_ps(g + 2 * H + j), _mm256_loadu_ps(b + 2 * H + j)));
    __m256 o = sigmoid8(_mm256_add_ps(_mm256_loadu_ps(g + 3 * H + j), _mm256_loadu_ps(b + 3 * H + j)));
    __m256 cj = _mm256_fmadd_ps(f, _mm256_loadu_ps(c + j), _mm256_mul_ps(i, gg));
    _mm256_storeu_ps(c + j, cj);
    _mm256_storeu_ps(h + j, _mm256_mul_ps(o, tanh8(cj)));
  }
  for (; j < H; j++) { /* a hidden size that is not a multiple of 8 */
    float i = sigmoid1(g[j] + b[j]), f = sigmoid1(g[H + j] + b[H + j]);
    float gg = tanhf(g[2 * H + j] + b[2 * H + j]), o = sigmoid1(g[3 * H + j] + b[3 * H + j]);
    c[j] = f * c[j] + i * gg;
    h[j] = o * tanhf(c[j]);
  }
}

/* One LSTM step of one row with the recurrent product in it: Wu is W_hh as dc_nn_pack_lstm packs
 * it (panel p holds the i, f, g, o rows of units 16p .. 16p + 15), so each panel's cell runs
 * as soon as its products are done, while the next panel streams in from L2 (a one-row
 * product waits on L2, not on the FMA units). g: the 4H input pre-activations, b their bias. */
AVX static void lstm_step1_avx(const float *hprev, const float *Wu, const float *g, const float *b, float *c, float *h,
                               int H) {
  for (int j = 0; j < H; j += 16) {
    __m256 v[8];
    dc_panel_row_avx2(H, hprev, Wu + (size_t)j * 4 * H, v);
    _Pragma("GCC unroll 8") for (int u = 0; u < 8; u++) { /* (W_hh h + g) + b, as the unfused path adds */
      const int off = u / 2 * H + j + 8 * (u % 2);
      v[u] = _mm256_add_ps(_mm256_add_ps(v[u], _mm256_loadu_ps(g + off)), _mm256_loadu_ps(b + off));
    }
    cell_units8(2, v, c + j, h + j);
  }
}

AVX static void gru_cell_avx(const float *gx, const float *bx, const float *gh, const float *bhn, const float *hprev,
                             float *h, int H) {
  int j = 0;
  __m256 zero = _mm256_setzero_ps(), one = _mm256_set1_ps(1.0f);
  for (; j + 8 <= H; j += 8) {
    __m256 hr = gh ? _mm256_loadu_ps(gh + j) : zero, hz = gh ? _mm256_loadu_ps(gh + H + j) : zero;
    __m256 hn = gh ? _mm256_loadu_ps(gh + 2 * H + j) : zero, hp = hprev ? _mm256_loadu_ps(hprev + j) : zero;
    __m256 r = sigmoid8(_mm256_add_ps(_mm256_add_ps(_mm256_loadu_ps(gx + j), _mm256_loadu_ps(bx + j)), hr));
    __m256 z = sigmoid8(_mm256_add_ps(_mm256_add_ps(_mm256_loadu_ps(gx + H + j), _mm256_loadu_ps(bx + H + j)), hz));
    __m256 nx = _mm256_add_ps(_mm256_loadu_ps(gx + 2 * H + j), _mm256_loadu_ps(bx + 2 * H + j));
    __m256 n = tanh8(_mm256_fmadd_ps(r, _mm256_add_ps(hn, _mm256_loadu_ps(bhn + j)), nx));
    _mm256_storeu_ps(h + j, _mm256_fmadd_ps(_mm256_sub_ps(one, z), n, _mm256_mul_ps(z, hp)));
  }
  for (; j < H; j++) {
    float vr = gh ? gh[j] : 0, vz = gh ? gh[H + j] : 0, vn = gh ? gh[2 * H + j] : 0, hp = hprev ? hprev[j] : 0;
    float r = sigmoid1(gx[j] + bx[j] + vr), z = sigmoid1(gx[H + j] + bx[H + j] + vz);
    float n = tanhf(gx[2 * H + j] + bx[2 * H + j] + r * (vn + bhn[j]));
    h[j] = (1.0f - z) * n + z * hp;
  }
}

/* The same with 16 lanes, where the CPU runs AVX-512 at full width. */
#define AVX512 __attribute__((target("avx512f")))

AVX512 static inline __m512 exp16(__m512 x) {
  x = _mm512_min_ps(_mm512_max_ps(x, _mm512_set1_ps(-87.0f)), _mm512_set1_ps(88.0f));
  __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                  _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);
  r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
  __m512 p = _mm512_set1_ps(1.9875691500e-4f);
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.3981999507e-3f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.3334519073e-3f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1665795894e-2f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.6666665459e-1f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.0000001201e-1f));
  p = _mm512_fmadd_ps(p, _mm512_mul_ps(r, r), _mm512_add_ps(r, _mm512_set1_ps(1.0f)));
  __m512i e = _mm512_slli_epi32(_mm512_add_epi32(_mm512_cvtps_epi32(n), _mm512_set1_epi32(127)), 23);
  return _mm512_mul_ps(p, _mm512_castsi512_ps(e));
}

AVX512 static inline __m512 sigmoid16(__m512 x) {
  __m512 one = _mm512_set1_ps(1.0f);
  return _mm512_div_ps(one, _mm512_add_ps(one, exp16(_mm512_sub_ps(_mm512_setzero_ps(), x))));
}

AVX512 static inline __m512 tanh16(__m512 x) {
  __m512 one = _mm512_set1_ps(1.0f);
  __m512 e = exp16(_mm512_mul_ps(x, _mm512_set1_ps(-2.0f)));
  return _mm512_div_ps(_mm512_sub_ps(one, e), _mm512_add_ps(one, e));
}

AVX512 static void sigmoid_avx512(float *x, size_t n) {
  size_t i = 0;
  for (; i + 16 <= n; i += 16) _mm512_storeu_ps(x + i, sigmoid16(_mm512_loadu_ps(x + i)));
  sigmoid_avx(x + i, n - i);
}

AVX512 static void tanh_avx512(float *x, size_t n) {
  size_t i = 0;
  for (; i + 16 <= n; i += 16) _mm512_storeu_ps(x + i, tanh16(_mm512_loadu_ps(x + i)));
  tanh_avx(x + i, n - i);
}

/* sigmoid16 of v[0..n) (tanh16 for those with is_tanh[u]; the same operations, so the same
 * results) in lockstep, as sigmoid8_lockstep. */
#define ACT_STEP16 _Pragma("GCC unroll 16") for (int u = 0; u < n; u++)
AVX512 static inline __attribute__((always_inline)) void sigmoid16_lockstep(__m512 *v, const bool *is_tanh, int n) {
  __m512 x[16], k[16], r[16], p[16], one = _mm512_set1_ps(1.0f);
  ACT_STEP16 x[u] = is_tanh[u] ? _mm512_mul_ps(v[u], _mm512_set1_ps(-2.0f)) : _mm512_sub_ps(_mm512_setzero_ps(), v[u]);
  ACT_STEP16 x[u] = _mm512_min_ps(_mm512_max_ps(x[u], _mm512_set1_ps(-87.0f)), _mm512_set1_ps(88.0f));
  ACT_STEP16 k[u] = _mm512_roundscale_ps(_mm512_mul_ps(x[u], _mm512_set1_ps(1.44269504088896341f)),
                                         _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  ACT_STEP16 r[u] = _mm512_fnmadd_ps(k[u], _mm512_set1_ps(0.693359375f), x[u]);
  ACT_STEP16 r[u] = _mm512_fnmadd_ps(k[u], _mm512_set1_ps(-2.12194440e-4f), r[u]);
  ACT_STEP16 p[u] = _mm512_fmadd_ps(_mm512_set1_ps(1.9875691500e-4f), r[u], _mm512_set1_ps(1.3981999507e-3f));
  ACT_STEP16 p[u] = _mm512_fmadd_ps(p[u], r[u], _mm512_set1_ps(8.3334519073e-3f));
  ACT_STEP16 p[u] = _mm512_fmadd_ps(p[u], r[u], _mm512_set1_ps(4.1665795894e-2f));
  ACT_STEP16 p[u] = _mm512_fmadd_ps(p[u], r[u], _mm512_set1_ps(1.6666665459e-1f));
  ACT_STEP16 p[u] = _mm512_fmadd_ps(p[u], r[u], _mm512_set1_ps(5.0000001201e-1f));
  ACT_STEP16 p[u] = _mm512_fmadd_ps(p[u], _mm512_mul_ps(r[u], r[u]), _mm512_add_ps(r[u], one));
  ACT_STEP16 p[u] = _mm512_mul_ps(p[u], _mm512_castsi512_ps(_mm512_slli_epi32(
                                            _mm512_add_epi32(_mm512_cvtps_epi32(k[u]), _mm512_set1_epi32(127)), 23)));
  ACT_STEP16 v[u] = _mm512_div_ps(is_tanh[u] ? _mm512_sub_ps(one, p[u]) : one, _mm512_add_ps(one, p[u]));
}

/* The cell of 16U units from their 4U gate vectors, as cell_units8. */
AVX512 static inline __attribute__((always_inline)) void cell_units16(int U, __m512 *v, float *c, float *h) {
  __m512 cv[4];
  bool is_tanh[16], all_tanh[4];
  _Pragma("GCC unroll 16") for (int u = 0; u < 4 * U; u++) is_tanh[u] = u / U == 2;
  sigmoid16_lockstep(v, is_tanh, 4 * U);
  _Pragma("GCC unroll 16") for (int u = 0; u < U; u++) {
    cv[u] = _mm512_fmadd_ps(v[U + u], _mm512_loadu_ps(c + 16 * u), _mm512_mul_ps(v[u], v[2 * U + u]));
    _mm512_storeu_ps(c + 16 * u, cv[u]);
    all_tanh[u] = true;
  }
  sigmoid16_lockstep(cv, all_tanh, U);
  _Pragma("GCC unroll 16") for (int u = 0; u < U; u++) _mm512_storeu_ps(h + 16 * u, _mm512_mul_ps(v[3 * U + u], cv[u]));
}

/* 32 units at a time, in lockstep as lstm_cell_avx. */
AVX512 static void lstm_cell_avx512(const float *g, const float *b, float *c, float *h, int H) {
  int j = 0;
  enum { U = 2 };
  for (; j + 16 * U <= H; j += 16 * U) {
    __m512 v[4 * U];
    _Pragma("GCC unroll 16") for (int u = 0; u < 4 * U; u++) {
      const int off = u / U * H + j + 16 * (u % U);
      v[u] = _mm512_add_ps(_mm512_loadu_ps(g + off), _mm512_loadu_ps(b + off));
    }
    cell_units16(U, v, c + j, h + j);
  }
  for (; j + 16 <= H; j += 16) {
    __m512 i = sigmoid16(_mm512_add_ps(_mm512_loadu_ps(g + j), _mm512_loadu_ps(b + j)));
    __m512 f = sigmoid16(_mm512_add_ps(_mm512_loadu_ps(g + H + j), _mm512_loadu_ps(b + H + j)));
    __m512 gg = tanh16(_mm512_add_ps(_mm512_loadu_ps(g + 2 * H + j), _mm512_loadu_ps(b + 2 * H + j)));
    __m512 o = sigmoid16(_mm512_add_ps(_mm512_loadu_ps(g + 3 * H + j), _mm512_loadu_ps(b + 3 * H + j)));
    __m512 cj = _mm512_fmadd_ps(f, _mm512_loadu_ps(c + j), _mm512_mul_ps(i, gg));
    _mm512_storeu_ps(c + j, cj);
    _mm512_storeu_ps(h + j, _mm512_mul_ps(o, tanh16(cj)));
  }
  for (; j < H; j++) { /* a hidden size that is not a multiple of 16 */
    float i = sigmoid1(g[j] + b[j]), f = sigmoid1(g[H + j] + b[H + j]);
    float gg = tanhf(g[2 * H + j] + b[2 * H + j]), o = sigmoid1(g[3 * H + j] + b[3 * H + j]);
    c[j] = f * c[j] + i * gg;
    h[j] = o * tanhf(c[j]);
  }
}

/* lstm_step1_avx with 16 lanes: a panel's four 16-lane groups are one unit block's four gates. */
AVX512 static void lstm_step1_avx512(const float *hprev, const float *Wu, const float *g, const float *b, float *c,
                                     float *h, int H) {
  for (int j = 0; j < H; j += 16) {
    __m512 v[4];
    dc_panel_row_avx512(H, hprev, Wu + (size_t)j * 4 * H, v);
    _Pragma("GCC unroll 4") for (int u = 0; u < 4; u++) { /* (W_hh h + g) + b, as the unfused path adds */
      const int off = u * H + j;
      v[u] = _mm512_add_ps(_mm512_add_ps(v[u], _mm512_loadu_ps(g + off)), _mm512_loadu_ps(b + off));
    }
    cell_units16(1, v, c + j, h + j);
  }
}

AVX512 static void gru_cell_avx512(const float *gx, const float *bx, const float *gh, const float *bhn,
                                   const float *hprev, float *h, int H) {
  int j = 0;
  __m512 zero = _mm512_setzero_ps(), one = _mm512_set1_ps(1.0f);
  for (; j + 16 <= H; j += 16) {
    __m512 hr = gh ? _mm512_loadu_ps(gh + j) : zero, hz = gh ? _mm512_loadu_ps(gh + H + j) : zero;
    __m512 hn = gh ? _mm512_loadu_ps(gh + 2 * H + j) : zero, hp = hprev ? _mm512_loadu_ps(hprev + j) : zero;
    __m512 r = sigmoid16(_mm512_add_ps(_mm512_add_ps(_mm512_loadu_ps(gx + j), _mm512_loadu_ps(bx + j)), hr));
    __m512 z = sigmoid16(_mm512_add_ps(_mm512_add_ps(_mm512_loadu_ps(gx + H + j), _mm512_loadu_ps(bx + H + j)), hz));
    __m512 nx = _mm512_add_ps(_mm512_loadu_ps(gx + 2 * H + j), _mm512_loadu_ps(bx + 2 * H + j));
    __m512 n = tanh16(_mm512_fmadd_ps(r, _mm512_add_ps(hn, _mm512_loadu_ps(bhn + j)), nx));
    _mm512_storeu_ps(h + j, _mm512_fmadd_ps(_mm512_sub_ps(one, z), n, _mm512_mul_ps(z, hp)));
  }
  for (; j < H; j++) {
    float vr = gh ? gh[j] : 0, vz = gh ? gh[H + j] : 0, vn = gh ? gh[2 * H + j] : 0, hp = hprev ? hprev[j] : 0;
    float r = sigmoid1(gx[j] + bx[j] + vr), z = sigmoid1(gx[H + j] + bx[H + j] + vz);
    float n = tanhf(gx[2 * H + j] + bx[2 * H + j] + r * (vn + bhn[j]));
    h[j] = (1.0f - z) * n + z * hp;
  }
}
#endif

static struct {
  const char *name;
  void (*sigmoid)(float *, size_t);
  void (*tanh)(float *, size_t);
  void (*lstm)(const float *, const float *, float *, float *, int);
  void (*gru)(const float *, const float *, const float *, const float *, const float *, float *, int);
  void (*lstm_step1)(const float *, const float *, const float *, const float *, float *, float *, int);
} K = {"libm", sigmoid_c, tanh_c, lstm_cell_c, gru_cell_c, NULL};

/* Called from luaopen (the loop thread) before any network runs; workers only read K.
 * DCONN_NN_KERNELS=libm forces the portable path (the parity specs run both), =avx2 stops at
 * 8 lanes. */
void dc_nn_kernels_init(void) {
#ifdef HAVE_X86
  const char *force = getenv("DCONN_NN_KERNELS");
  __builtin_cpu_init();
  if ((!force || strcmp(force, "libm") != 0) && __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) {
    K.name = "avx2";
    K.sigmoid = sigmoid_avx;
    K.tanh = tanh_avx;
    K.lstm = lstm_cell_avx;
    K.gru = gru_cell_avx;
    K.lstm_step1 = lstm_step1_avx;
    if (__builtin_cpu_supports("avx512f") && !(force && strcmp(force, "avx2") == 0)) {
      K.name = "avx512";
      K.sigmoid = sigmoid_avx512;
      K.tanh = tanh_avx512;
      K.lstm = lstm_cell_avx512;
      K.gru = gru_cell_avx512;
      K.lstm_step1 = lstm_step1_avx512;
    }
  }
#endif
}

const char *dc_nn_kernels_name(void) { return K.name; }
void dc_nn_sigmoid(float *x, size_t n) { K.sigmoid(x, n); }
void dc_nn_tanh(float *x, size_t n) { K.tanh(x, n); }
void dc_nn_lstm_cell(const float *g, const float *b, float *c, float *h, int H) { K.lstm(g, b, c, h, H); }
void dc_nn_gru_cell(const float *gx, const float *bx, const float *gh, const float *bhn, const float *hprev, float *h,
                    int H) {
  K.gru(gx, bx, gh, bhn, hprev, h, H);
}
void dc_nn_lstm_step1(const float *hprev, const float *Wu, const float *g, const float *b, float *c, float *h, int H) {
  K.lstm_step1(hprev, Wu, g, b, c, h, H);
}
