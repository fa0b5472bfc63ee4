/*
 * float32 tensors as Lua userdata, shared by the parts of dconn.nn (tensor.c, nn_lua.c,
 * forecast.c). A tensor is a view: data pointer, shape and strides (in elements) over a
 * storage block that lives in the Lua heap as the tensor's first user value, so views (slices,
 * windows, rows) share memory and keep it alive, and tensors count against --memory-limit.
 */
#ifndef DCONN_TENSOR_H
#define DCONN_TENSOR_H

#include <stdbool.h>
#include <stdint.h>

#include <lua.h>

#define DC_TENSOR_MT "dconn.tensor"
#define DC_TENSOR_MAX_DIMS 8

typedef struct dc_tensor {
  float *data;
  int ndim;
  int64_t shape[DC_TENSOR_MAX_DIMS];
  int64_t stride[DC_TENSOR_MAX_DIMS];
} dc_tensor;

dc_tensor *dc_tensor_check(lua_State *L, int idx);
dc_tensor *dc_tensor_test(lua_State *L, int idx);
/* Pushes a new contiguous zero-filled tensor (raises on a bad shape or out of memory). */
dc_tensor *dc_tensor_push(lua_State *L, int ndim, const int64_t *shape);
int64_t dc_tensor_numel(const dc_tensor *t);
bool dc_tensor_is_contiguous(const dc_tensor *t);
/* Copies the elements in row-major order into out (numel floats). */
void dc_tensor_pack(const dc_tensor *t, float *out);
/* The tensor at idx, or a new one built from the nested Lua table there (replacing it). */
dc_tensor *dc_tensor_arg(lua_State *L, int idx);
/* Registers the metatable and adds the constructors to the table on top of the stack. */
void dc_tensor_open(lua_State *L);

#endif
