// lstmkit fused kernels: the pool of large working buffers that the kernels keep between calls.
#pragma once

#include <ATen/ATen.h>

#include <cstdint>
#include <mutex>
#include <vector>

namespace lstmkit {

// A training step allocates a few buffers of T*B*4H floats (the input projection, the gates, the
// gate gradients: 52 MB each at train-large). From the system allocator they come back as fresh
// pages on every call (glibc maps anything over 32 MB anew, and trims its heap), and each first
// touch of a page is a fault that zeroes it: ~55,000 faults per train-large forward+backward, tens
// of milliseconds on this VM. The pool keeps such buffers and hands one out again once nothing else
// holds it (its storage's reference count is back to the pool's own), so a steady training or
// inference loop allocates nothing. Bounded: at most kMaxBytes in the pool (free buffers are
// dropped first; past the bound a request is served by a plain allocation). release() frees the
// free buffers (lstmkit.kernels.release_buffers()).
class BufferPool {
 public:
  static constexpr int64_t kMinBytes = 1 << 18;
  static constexpr int64_t kMaxBytes = int64_t(1) << 30;

  static BufferPool& instance();

  // Like at::empty(shape, opts) (uninitialised, contiguous).
  at::Tensor empty(at::IntArrayRef shape, const at::TensorOptions& opts);

  // Frees the buffers nothing else holds; returns the bytes still pooled (held by live tensors).
  int64_t release();

  // Bytes pooled (free or held).
  int64_t bytes();

 private:
  void drop_free(int64_t keep);

  std::mutex mu_;
  std::vector<at::Tensor> bufs_;
  int64_t total_ = 0;
};

// A working buffer from the pool (uninitialised, contiguous): like at::empty.
inline at::Tensor pooled(at::IntArrayRef shape, const at::TensorOptions& opts) {
  return BufferPool::instance().empty(shape, opts);
}

}  // namespace lstmkit
