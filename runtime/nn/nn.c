/*
 * Forward pass of a dc_nn (see nn.h) with CBLAS.
 *
 * Recurrent layers follow PyTorch's equations (torch.nn.LSTM / torch.nn.GRU docs). For each
 * stacked layer, the input projection of every timestep of every window in the chunk is one
 * sgemm ([B*L, in] x W_ih^T); then each step adds the recurrent part with one sgemm whose
 * output rows are that step's rows of the projection (ldc = L * gates), and a fused pointwise
 * kernel applies the gates. One window at a time, an LSTM step is a single kernel, product and
 * cell together (dc_nn_lstm_step1). Windows are processed in chunks of CHUNK so the projection
 * of a large batch never needs more than a few MB.
 */
#include "nn.h"

#include <stdlib.h>
#include <string.h>

#include <cblas.h>

/* Windows per pass: the projection of 128 windows x 10 steps x 512 gates is 2.6 MB, and one
 * step's slice of it (256 KB) stays in L2 next to W_hh. */
#define CHUNK 128
/* Up to this many rows, products use the packed small-M kernel when the CPU has it. */
#define SMALL_M 64
/* With AVX2 only, OpenBLAS catches up from about 16 rows when K is small (a step's input
 * projection of a few features); with K >= 64 the packed kernel stays ahead up to SMALL_M. */
#define SMALL_M_AVX2 16
#define SMALL_K_AVX2 64

dc_nn *dc_nn_new(int nlayers) {
  dc_nn *net = calloc(1, sizeof *net);
  if (!net) return NULL;
  net->layers = calloc((size_t)(nlayers > 0 ? nlayers : 1), sizeof *net->layers);
  if (!net->layers) {
    free(net);
    return NULL;
  }
  net->nlayers = nlayers;
  net->refs = 1;
  return net;
}

void dc_nn_ref(dc_nn *net) { __atomic_add_fetch(&net->refs, 1, __ATOMIC_RELAXED); }

void dc_nn_unref(dc_nn *net) {
  if (!net || __atomic_sub_fetch(&net->refs, 1, __ATOMIC_ACQ_REL) != 0) return;
  for (int i = 0; i < net->nlayers; i++) {
    dc_nn_layer *l = &net->layers[i];
    free(l->w);
    free(l->b);
    free(l->a);
    free(l->c);
    free(l->w_p);
    for (int k = 0; k < DC_NN_MAX_RNN_LAYERS; k++) {
      free(l->w_ih_p[k]);
      free(l->w_hh_p[k]);
      free(l->w_ih[k]);
      free(l->w_hh[k]);
      free(l->w_hh_units[k]);
      free(l->b_x[k]);
      free(l->b_hn[k]);
    }
  }
  free(net->layers);
  free(net);
}

static int gates_of(const dc_nn_layer *l) { return l->kind == DC_NN_LSTM ? 4 : 3; }

static float *packed(const float *W, int N, int K) {
  float *p = malloc(dc_nn_packed_floats(N, K) * sizeof(float));
  if (p) dc_nn_pack(W, N, K, p);
  return p;
}

int dc_nn_pack_layer(dc_nn_layer *l) {
  if (!dc_nn_small_gemm_available()) return 0;
  if (l->kind == DC_NN_LINEAR) return (l->w_p = packed(l->w, l->out, l->in)) ? 0 : -1;
  if (l->kind != DC_NN_LSTM && l->kind != DC_NN_GRU) return 0;
  int GH = gates_of(l) * l->hidden;
  for (int k = 0; k < l->num_layers; k++) {
    l->w_ih_p[k] = packed(l->w_ih[k], GH, k ? l->hidden : l->in);
    l->w_hh_p[k] = packed(l->w_hh[k], GH, l->hidden);
    if (!l->w_ih_p[k] || !l->w_hh_p[k]) return -1;
    if (l->kind == DC_NN_LSTM && l->hidden % 16 == 0) {
      if (!(l->w_hh_units[k] = malloc(dc_nn_packed_floats(GH, l->hidden) * sizeof(float)))) return -1;
      dc_nn_pack_lstm(l->w_hh[k], l->hidden, l->hidden, l->w_hh_units[k]);
    }
  }
  return 0;
}

int dc_nn_output_shape(const dc_nn *net, bool seq, int features, bool *out_seq, int *out_features, char *err,
                       size_t errlen) {
  for (int i = 0; i < net->nlayers; i++) {
    const dc_nn_layer *l = &net->layers[i];
    bool rnn = l->kind == DC_NN_LSTM || l->kind == DC_NN_GRU;
    if (rnn && !seq) {
      snprintf(err, errlen, "layer %d (%s) needs [batch, seq, features] input", i + 1,
               l->kind == DC_NN_LSTM ? "LSTM" : "GRU");
      return -1;
    }
    if (l->in > 0 && l->in != features) {
      snprintf(err, errlen, "layer %d takes %d features, its input has %d", i + 1, l->in, features);
      return -1;
    }
    if (l->out > 0) features = l->out;
    if (rnn) seq = l->sequence;
  }
  *out_seq = seq;
  *out_features = features;
  return 0;
}

double dc_nn_flops(const dc_nn *net, int L) {
  double flops = 0;
  int rows = L;
  for (int i = 0; i < net->nlayers; i++) {
    const dc_nn_layer *l = &net->layers[i];
    if (l->kind == DC_NN_LINEAR) flops += 2.0 * rows * l->in * l->out;
    if (l->kind == DC_NN_LSTM || l->kind == DC_NN_GRU) {
      double gh = (double)gates_of(l) * l->hidden;
      for (int k = 0; k < l->num_layers; k++) flops += 2.0 * L * ((k ? l->hidden : l->in) + l->hidden) * gh;
      if (!l->sequence) rows = 1;
    }
  }
  return flops;
}

/* C[M x N] (ldc) = A[M x K] (lda) W^T + beta C, W [N x K] row-major (Wp: packed, or NULL).
 * Few rows go to the packed kernel; otherwise one row is a gemv and more a gemm. */
static void matmul(int M, int N, int K, const float *A, int lda, const float *W, const float *Wp, float beta, float *C,
                   int ldc) {
  static int small_m;
  if (!small_m) small_m = strcmp(dc_nn_small_gemm_name(), "avx2") == 0 ? SMALL_M_AVX2 : SMALL_M;
  if (Wp && (M <= small_m || (M <= SMALL_M && K >= SMALL_K_AVX2))) dc_nn_small_gemm(M, N, K, A, lda, Wp, beta, C, ldc);
  else if (M == 1) cblas_sgemv(CblasRowMajor, CblasNoTrans, N, K, 1.0f, W, K, A, 1, beta, C, 1);
  else cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, M, N, K, 1.0f, A, lda, W, K, beta, C, ldc);
}

typedef struct scratch {
  float *xt;    /* [L, B, F] the input, time-major */
  float *seq;   /* [L, B, H] hidden states of the current stacked layer, time-major */
  float *proj;  /* [L, B, gates*H] input projections */
  float *state; /* [B, H] LSTM cell state */
  float *gh;    /* [B, 3H] GRU recurrent part */
} scratch;

/* One recurrent layer (all its stacked layers) on in [B, L, F] -> out [B, L, H] or [B, H].
 * Everything inside runs time-major, so that each step's rows of the projection, of h_{t-1}
 * and of h_t are contiguous blocks: the per-step product then writes one dense [B, gates*H]
 * block. A stacked layer's projection is computed from seq before its steps overwrite it. */
static void run_rnn(const dc_nn_layer *l, const float *in, int B, int L, float *out, const scratch *s) {
  int H = l->hidden, GH = gates_of(l) * H, F = l->in;
  for (int t = 0; t < L; t++)
    for (int b = 0; b < B; b++)
      memcpy(s->xt + ((size_t)t * B + b) * F, in + ((size_t)b * L + t) * F, (size_t)F * sizeof(float));
  const float *x = s->xt;
  for (int k = 0; k < l->num_layers; k++) {
    matmul(B * L, GH, F, x, F, l->w_ih[k], l->w_ih_p[k], 0.0f, s->proj, GH);
    if (l->kind == DC_NN_LSTM) memset(s->state, 0, (size_t)B * H * sizeof(float));
    for (int t = 0; t < L; t++) {
      float *pt = s->proj + (size_t)t * B * GH, *ht = s->seq + (size_t)t * B * H;
      const float *hprev = ht - (size_t)B * H;
      if (l->kind == DC_NN_LSTM && B == 1 && t > 0 && l->w_hh_units[k]) {
        dc_nn_lstm_step1(hprev, l->w_hh_units[k], pt, l->b_x[k], s->state, ht, H);
      } else if (l->kind == DC_NN_LSTM) {
        if (t > 0) /* h_0 = 0: nothing to add at t = 0 */
          matmul(B, GH, H, hprev, H, l->w_hh[k], l->w_hh_p[k], 1.0f, pt, GH);
        for (int b = 0; b < B; b++)
          dc_nn_lstm_cell(pt + (size_t)b * GH, l->b_x[k], s->state + (size_t)b * H, ht + (size_t)b * H, H);
      } else {
        if (t > 0) matmul(B, GH, H, hprev, H, l->w_hh[k], l->w_hh_p[k], 0.0f, s->gh, GH);
        for (int b = 0; b < B; b++)
          dc_nn_gru_cell(pt + (size_t)b * GH, l->b_x[k], t ? s->gh + (size_t)b * GH : NULL, l->b_hn[k],
                         t ? hprev + (size_t)b * H : NULL, ht + (size_t)b * H, H);
      }
    }
    x = s->seq;
    F = H;
  }
  if (!l->sequence) { /* h_n of the top layer */
    memcpy(out, s->seq + (size_t)(L - 1) * B * H, (size_t)B * H * sizeof(float));
    return;
  }
  for (int b = 0; b < B; b++)
    for (int t = 0; t < L; t++)
      memcpy(out + ((size_t)b * L + t) * H, s->seq + ((size_t)t * B + b) * H, (size_t)H * sizeof(float));
}

static void run_layer(const dc_nn_layer *l, const float *in, int rows, int features, int B, int L, float *out,
                      const scratch *s) {
  size_t n = (size_t)rows * (size_t)features;
  switch (l->kind) {
  case DC_NN_LINEAR:
    if (l->b)
      for (int r = 0; r < rows; r++) memcpy(out + (size_t)r * l->out, l->b, (size_t)l->out * sizeof(float));
    matmul(rows, l->out, l->in, in, l->in, l->w, l->w_p, l->b ? 1.0f : 0.0f, out, l->out);
    break;
  case DC_NN_RELU:
    for (size_t i = 0; i < n; i++) out[i] = in[i] > 0 ? in[i] : 0.0f;
    break;
  case DC_NN_TANH:
  case DC_NN_SIGMOID:
    memcpy(out, in, n * sizeof(float));
    (l->kind == DC_NN_TANH ? dc_nn_tanh : dc_nn_sigmoid)(out, n);
    break;
  case DC_NN_SCALE:
    for (int r = 0; r < rows; r++)
      for (int j = 0; j < l->in; j++) {
        size_t i = (size_t)r * l->in + j;
        out[i] = l->divide ? (in[i] - l->a[j]) / l->c[j] : in[i] * l->a[j] + l->c[j];
      }
    break;
  case DC_NN_LSTM:
  case DC_NN_GRU: run_rnn(l, in, B, L, out, s); break;
  }
}

int dc_nn_run(const dc_nn *net, const float *x, int64_t B, bool seq, int L, int F, float *out) {
  if (!seq) L = 1;
  int chunk = B < CHUNK ? (int)B : CHUNK;
  /* widest activation, and the recurrent scratch (per window) */
  size_t width = (size_t)F, xt = 0, seqw = 0, proj = 0, state = 0, gh = 0;
  for (int i = 0; i < net->nlayers; i++) {
    const dc_nn_layer *l = &net->layers[i];
    if (l->out > 0 && (size_t)l->out > width) width = (size_t)l->out;
    if (l->kind == DC_NN_LSTM || l->kind == DC_NN_GRU) {
      size_t H = (size_t)l->hidden, GH = (size_t)gates_of(l) * H;
      if ((size_t)l->in * L > xt) xt = (size_t)l->in * L;
      if (H * L > seqw) seqw = H * L;
      if (GH * L > proj) proj = GH * L;
      if (H > state) state = H;
      if (l->kind == DC_NN_GRU && GH > gh) gh = GH;
    }
  }
  size_t act = (size_t)chunk * L * width;
  float *mem = malloc((2 * act + (size_t)chunk * (xt + seqw + proj + state + gh)) * sizeof(float) + 64);
  if (!mem) return -1;
  float *buf[2] = {mem, mem + act};
  scratch s = {.xt = mem + 2 * act};
  s.seq = s.xt + (size_t)chunk * xt;
  s.proj = s.seq + (size_t)chunk * seqw;
  s.state = s.proj + (size_t)chunk * proj;
  s.gh = s.state + (size_t)chunk * state;

  bool out_seq = seq;
  int out_features = F;
  char err[8];
  dc_nn_output_shape(net, seq, F, &out_seq, &out_features, err, sizeof err);
  size_t out_row = (size_t)(out_seq ? L : 1) * out_features;
  for (int64_t b0 = 0; b0 < B; b0 += chunk) {
    int n = (int)(B - b0 < chunk ? B - b0 : chunk);
    const float *cur = x + (size_t)b0 * L * F;
    bool cur_seq = seq;
    int which = 0, features = F;
    for (int i = 0; i < net->nlayers; i++) {
      const dc_nn_layer *l = &net->layers[i];
      float *next = buf[which];
      run_layer(l, cur, n * (cur_seq ? L : 1), features, n, L, next, &s);
      if (l->kind == DC_NN_LSTM || l->kind == DC_NN_GRU) cur_seq = l->sequence;
      if (l->out > 0) features = l->out;
      cur = next;
      which ^= 1;
    }
    memcpy(out + (size_t)b0 * out_row, cur, (size_t)n * out_row * sizeof(float));
  }
  free(mem);
  return 0;
}
