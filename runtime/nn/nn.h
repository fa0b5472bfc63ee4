/*
 * The network behind dconn.model: a list of layers with weights in PyTorch's layout, run on a
 * batch of windows with CBLAS. Plain C with no Lua, safe to run on a libuv worker thread: the
 * network is read-only once built and reference-counted, so a worker keeps it alive.
 */
#ifndef DCONN_NN_H
#define DCONN_NN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define DC_NN_MAX_RNN_LAYERS 16

typedef enum {
  DC_NN_LINEAR,  /* y = x W^T + b, W [out x in] */
  DC_NN_RELU,
  DC_NN_TANH,
  DC_NN_SIGMOID,
  DC_NN_LSTM,    /* gates i, f, g, o stacked in W_ih [4H x in], W_hh [4H x H] */
  DC_NN_GRU,     /* gates r, z, n stacked in W_ih [3H x in], W_hh [3H x H] */
  DC_NN_SCALE,   /* per feature: y = x * a + c, or (x - a) / c when divide */
} dc_nn_kind;

typedef struct dc_nn_layer {
  dc_nn_kind kind;
  int in, out; /* features in and out (the last dimension) */
  /* LINEAR */
  float *w, *b; /* b may be NULL */
  /* LSTM, GRU: per stacked layer k */
  int hidden, num_layers;
  bool sequence; /* output every step [B, L, H]; else the last step of the top layer [B, H] */
  float *w_ih[DC_NN_MAX_RNN_LAYERS], *w_hh[DC_NN_MAX_RNN_LAYERS];
  /* input-side bias: LSTM b_ih + b_hh; GRU (b_ir + b_hr, b_iz + b_hz, b_in) */
  float *b_x[DC_NN_MAX_RNN_LAYERS];
  float *b_hn[DC_NN_MAX_RNN_LAYERS]; /* GRU: b_hn, which sits inside r * (...) */
  /* SCALE */
  float *a, *c;
  bool divide;
  /* the weights again, packed for dc_nn_small_gemm (NULL when the CPU lacks AVX2 and FMA) */
  float *w_p, *w_ih_p[DC_NN_MAX_RNN_LAYERS], *w_hh_p[DC_NN_MAX_RNN_LAYERS];
  /* LSTM with hidden % 16 == 0: W_hh once more, as dc_nn_pack_lstm packs it, for dc_nn_lstm_step1 */
  float *w_hh_units[DC_NN_MAX_RNN_LAYERS];
} dc_nn_layer;

typedef struct dc_nn {
  int refs; /* atomic: the Lua object and any work in flight */
  int nlayers;
  dc_nn_layer *layers;
} dc_nn;

/* A network with nlayers zeroed layers and one reference; NULL when out of memory. The
 * caller fills the layers with malloc'd arrays, which dc_nn_unref frees. */
dc_nn *dc_nn_new(int nlayers);
void dc_nn_ref(dc_nn *net);
void dc_nn_unref(dc_nn *net);

/* Adds the packed copies of a built layer's weights; -1 when out of memory. */
int dc_nn_pack_layer(dc_nn_layer *l);

/* Shape of the output for input [B, L, F] (seq = true) or [B, F]: 0 with *out_seq and
 * *out_features set, or -1 with a message. */
int dc_nn_output_shape(const dc_nn *net, bool seq, int features, bool *out_seq, int *out_features, char *err,
                       size_t errlen);
/* Multiply-adds x 2 for one window of L steps (L = 1 without a time dimension). */
double dc_nn_flops(const dc_nn *net, int L);
/* Runs B windows: x is [B, L, F] (or [B, F] when !seq) contiguous; out gets the output
 * contiguous. 0, or -1 when out of memory. Thread-safe. */
int dc_nn_run(const dc_nn *net, const float *x, int64_t B, bool seq, int L, int F, float *out);

/* Pointwise kernels (nn_kernels.c), AVX2+FMA when the CPU has it, else libm. */
void dc_nn_kernels_init(void);
const char *dc_nn_kernels_name(void);
void dc_nn_sigmoid(float *x, size_t n);
void dc_nn_tanh(float *x, size_t n);
/* One LSTM step for one row: g = the 4H gate pre-activations without bias, b their bias;
 * c (H) updated in place; h (H) written. */
void dc_nn_lstm_cell(const float *g, const float *b, float *c, float *h, int H);
/* One GRU step for one row: gx = 3H input pre-activations without bias, bx their bias, gh =
 * W_hh h_prev (3H, NULL when h_prev = 0), bhn = b_hn, hprev (NULL = 0); h (H) written. */
void dc_nn_gru_cell(const float *gx, const float *bx, const float *gh, const float *bhn, const float *hprev, float *h,
                    int H);
/* Small-M matrix product on packed weights (AVX-512, else AVX2+FMA): C[M x N] (ldc) = A[M x K] (lda) W^T +
 * beta C with beta 0 or 1, W given as dc_nn_pack made it. For the few rows of small batches,
 * where BLAS spends more time packing than multiplying. */
bool dc_nn_small_gemm_available(void);
const char *dc_nn_small_gemm_name(void); /* "avx512", "avx2" or "none" (BLAS for every product) */
size_t dc_nn_packed_floats(int N, int K);
void dc_nn_pack(const float *W, int N, int K, float *Wp);
void dc_nn_small_gemm(int M, int N, int K, const float *A, int lda, const float *Wp, float beta, float *C, int ldc);
/* W_hh [4H x K] of an LSTM (H % 16 == 0) packed as dc_nn_pack packs it with its rows reordered
 * so that 64-column panel p holds the i, f, g, o rows of units 16p .. 16p + 15. */
void dc_nn_pack_lstm(const float *W, int H, int K, float *Wp);
/* One LSTM step of one row with the recurrent product fused in (small kernels on, so AVX2 or
 * AVX-512): hprev (H), Wu from dc_nn_pack_lstm, g = the 4H input pre-activations without bias,
 * b their bias; c updated, h written, the same results as the product then dc_nn_lstm_cell. */
void dc_nn_lstm_step1(const float *hprev, const float *Wu, const float *g, const float *b, float *c, float *h, int H);

#endif
