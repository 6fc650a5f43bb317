// lstmkit fused kernels: the streaming step of a stack of unidirectional layers, one time step per
// call, state carried (FusedStreamCpp; lstmkit.kernels.FusedStream is its Python face).
#pragma once

#include <ATen/ATen.h>

#include <cstdint>
#include <vector>

namespace lstmkit {

using at::Tensor;

// One layer of the stream: its packed weights and its state (the tensors are of the stream's dtype).
struct StreamLayer {
  int64_t I = 0, H = 0, P = 0, R = 0, K = 0, Hp = 0, NU = 0, NPP = 0;
  Tensor wc;    // (NU, K, 4L) with K = I + R: [W_ih | W_hh] per unit block, gates i, f, g, o interleaved
  Tensor bias;  // (4Hp,) b_ih + b_hh interleaved (zeros without biases)
  Tensor wr;    // (NPP, H, 2L) projection panels, or undefined
  Tensor xh;    // (B, K): [x_t | h_{t-1}] -- the h state of this layer lives in columns I..K
  Tensor c;     // (B, H) cell state
  Tensor pre;   // (B, 4Hp) pre-activations, interleaved
  Tensor hc;    // (B, H) o * tanh(c) before the projection, or undefined
  Tensor peep;  // (3, H) peephole weights p_i, p_f, p_o, or undefined
  Tensor ln;    // layer norm: (4, 4Hp) gains/shifts of x W_ih^T and h W_hh^T interleaved, or undefined
  Tensor lnc;   // layer norm of c: (2, H) gain, shift
  Tensor prex;  // layer norm: (B, 4Hp) x W_ih^T (pre holds h W_hh^T)
};

class FusedStreamCpp {
 public:
  // Per layer k: w_ih[k] (4H, I), w_hh[k] (4H, R), bias[k] (4H,) = b_ih + b_hh or empty, w_hr[k]
  // (P, H) or empty; peep[k] (3, H) or empty, ln[k] the six layer-norm tensors or none (peep and
  // ln may also be empty lists). coupled and the zoneout rates (evaluation: the expectation) apply
  // to every layer. num_threads as in lstm_tuning.h's stream_threads.
  FusedStreamCpp(const std::vector<Tensor>& w_ih, const std::vector<Tensor>& w_hh, const std::vector<Tensor>& bias,
                 const std::vector<Tensor>& w_hr, int64_t batch, int64_t num_threads, const std::vector<Tensor>& peep,
                 const std::vector<std::vector<Tensor>>& ln, bool coupled, double zoneout_c, double zoneout_h);

  // x (B, I), or (I,) with batch 1 -> h of the last layer (B, R) or (R,)
  Tensor step(const Tensor& x);
  void reset();
  // {h (L, B, R), c (L, B, H)}
  std::vector<Tensor> get_state() const;
  void set_state(const Tensor& h, const Tensor& c);
  int64_t num_threads() const { return nt_; }

 private:
  template <typename T>
  void run(const T* x, T* out);
  template <typename T>
  void pointwise_variants(const StreamLayer& l, int64_t u0, int64_t u1);

  int64_t B_;
  bool coupled_ = false;
  double zc_ = 0.0, zh_ = 0.0;
  int nt_ = 1;
  uint64_t calls_ = 0;  // step calls so far (the weight blocks are read in alternating order)
  at::ScalarType st_;
  std::vector<StreamLayer> layers_;
};

}  // namespace lstmkit
