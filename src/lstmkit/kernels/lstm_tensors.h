// lstmkit fused kernels: small helpers between torch tensors and the kernels (argument checks,
// optional tensors, lane counts), shared by the translation units that take tensors.
#pragma once

#include <ATen/ATen.h>

#include <cstdint>

#include "lstm_simd.h"

namespace lstmkit {

using at::Tensor;
using c10::optional;

inline bool has(const optional<Tensor>& t) { return t.has_value() && t->defined(); }

// The tensor of an optional argument, undefined where absent (the layer's structs hold undefined
// tensors for what a configuration does not have).
inline Tensor or_undefined(const optional<Tensor>& t) { return has(t) ? *t : Tensor(); }

template <typename T>
inline const T* ptr_or_null(const Tensor& t) {
  return t.defined() ? t.data_ptr<T>() : nullptr;
}
template <typename T>
inline T* mut_ptr_or_null(const Tensor& t) {
  return t.defined() ? t.data_ptr<T>() : nullptr;
}

inline int64_t round_up(int64_t a, int64_t m) { return (a + m - 1) / m * m; }

// Vector lanes of the kernels for a dtype (Vec<float>::L or Vec<double>::L).
inline int lanes_for(at::ScalarType st) { return st == at::kFloat ? Vec<float>::L : Vec<double>::L; }

inline void check_tensor(const Tensor& t, const char* name, at::ScalarType st, int64_t dim) {
  TORCH_CHECK(t.defined(), "lstmkit fused kernel: ", name, " is undefined");
  TORCH_CHECK(t.device().is_cpu(), "lstmkit fused kernel: ", name, " must be on the CPU");
  TORCH_CHECK(t.scalar_type() == st, "lstmkit fused kernel: ", name, " has dtype ", t.scalar_type(),
              ", expected ", st);
  TORCH_CHECK(t.dim() == dim, "lstmkit fused kernel: ", name, " must have ", dim, " dimensions, got ",
              t.sizes());
}

}  // namespace lstmkit
