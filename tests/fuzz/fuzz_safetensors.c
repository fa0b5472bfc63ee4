/* libFuzzer target for the safetensors reader (runtime/nn/safetensors.c): any byte string must
 * parse to a consistent layout or fail with a message; converting every tensor of a file that
 * parsed must stay inside the buffer. `make fuzz` runs it (FUZZ_TIME seconds). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "nn/safetensors.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  dc_st_header h;
  char err[256];
  /* a private copy, so reads past the end are caught even when libFuzzer's buffer has slack */
  unsigned char *copy = malloc(size ? size : 1);
  if (!copy) return 0;
  if (size) memcpy(copy, data, size);
  if (dc_st_parse(copy, size, &h, err, sizeof err) == 0) {
    for (int i = 0; i < h.ntensors; i++) {
      const dc_st_tensor *t = &h.tensors[i];
      if (t->end > h.data_size || t->end - t->begin != t->numel * dc_st_dtype_size(t->dtype)) abort();
      float *out = malloc(t->numel * sizeof(float) + 1);
      if (!out) continue;
      dc_st_to_f32(t, copy + h.data_start, out);
      free(out);
    }
    dc_st_free(&h);
  } else if (err[0] == '\0') {
    abort(); /* every failure explains itself */
  }
  free(copy);
  return 0;
}
