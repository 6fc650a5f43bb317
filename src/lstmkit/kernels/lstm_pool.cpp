// lstmkit fused kernels: the buffer pool (see lstm_pool.h).
#include "lstm_pool.h"

namespace lstmkit {

BufferPool& BufferPool::instance() {
  static BufferPool* p = new BufferPool();  // never destroyed: tensors may outlive static destruction
  return *p;
}

at::Tensor BufferPool::empty(at::IntArrayRef shape, const at::TensorOptions& opts) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  const int64_t bytes = n * (int64_t)c10::elementSize(c10::typeMetaToScalarType(opts.dtype()));
  if (bytes < kMinBytes || !opts.device().is_cpu()) return at::empty(shape, opts);
  std::lock_guard<std::mutex> g(mu_);
  int best = -1;
  for (int k = 0; k < (int)bufs_.size(); ++k) {
    const at::Tensor& b = bufs_[k];
    if (b.scalar_type() != c10::typeMetaToScalarType(opts.dtype()) || b.storage().use_count() != 1) continue;
    const int64_t cap = b.numel();
    if (cap < n || cap > 2 * n + (kMinBytes / 4)) continue;  // no much larger buffer for a small request
    if (best < 0 || cap < bufs_[best].numel()) best = k;
  }
  if (best >= 0) return bufs_[best].narrow(0, 0, n).view(shape);
  drop_free(kMaxBytes - bytes);  // a new buffer: make room by dropping free ones
  if (total_ + bytes > kMaxBytes) return at::empty(shape, opts);
  at::Tensor b = at::empty({n}, opts);
  bufs_.push_back(b);
  total_ += bytes;
  return b.view(shape);
}

int64_t BufferPool::release() {
  std::lock_guard<std::mutex> g(mu_);
  drop_free(0);
  return total_;
}

int64_t BufferPool::bytes() {
  std::lock_guard<std::mutex> g(mu_);
  return total_;
}

// Drops buffers nothing else holds, newest first, until at most `keep` bytes are pooled (mu_ held).
void BufferPool::drop_free(int64_t keep) {
  for (int k = (int)bufs_.size() - 1; k >= 0 && total_ > keep; --k)
    if (bufs_[k].storage().use_count() == 1) {
      total_ -= bufs_[k].nbytes();
      bufs_.erase(bufs_.begin() + k);
    }
}

}  // namespace lstmkit
