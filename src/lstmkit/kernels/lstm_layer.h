// lstmkit fused kernels: one LSTM layer, one direction, forward and backward over a whole sequence
// (lstm_layer.cpp), and the differentiable layer around them (lstm_autograd.cpp). What passes
// between them is named here: the parameters, the options, what the forward saves for the
// backward, the gradients wanted and the gradients computed.
//
// Shapes: T steps, B batch, I input, H hidden, P projection, R = P if P > 0 else H. A tensor a
// configuration does not have (no bias, no projection, ...) is undefined (Tensor()).
#pragma once

#include <ATen/ATen.h>

#include <cstdint>
#include <vector>

namespace lstmkit {

using at::Tensor;

// The six layer-norm parameters (all defined with layer norm, all undefined without):
// a = LN(x W_ih^T; gain_ih, shift_ih) + LN(h W_hh^T; gain_hh, shift_hh) + b_ih + b_hh, and
// h~ = o * tanh(LN(c~; gain_c, shift_c)).
struct LayerNormParams {
  Tensor gain_ih, shift_ih;  // (4H,)
  Tensor gain_hh, shift_hh;  // (4H,)
  Tensor gain_c, shift_c;    // (H,)
  bool defined() const { return gain_ih.defined(); }
};

// The differentiable parameters of one layer, in torch's shapes.
struct LayerParams {
  Tensor w_ih;        // (4H, I)
  Tensor w_hh;        // (4H, R)
  Tensor b_ih, b_hh;  // (4H,) or undefined
  Tensor w_hr;        // (P, H) or undefined
  Tensor peep;        // (3, H) rows p_i, p_f, p_o, or undefined
  LayerNormParams ln;
};

// What is not differentiable.
struct LayerOptions {
  Tensor zoneout_c;  // (T, B, H) keep-mask of c, or undefined
  Tensor zoneout_h;  // (T, B, R) keep-mask of h, or undefined
  Tensor lengths;    // (B,) int64 CPU, or undefined
  bool coupled = false;
  int64_t num_threads = 0;  // > 0 at most, < 0 exactly -n (tests), 0 torch's setting
};

// With layer norm, what the forward keeps for the backward (undefined otherwise).
struct LayerNormSaved {
  Tensor zx;      // (T*B, 4H) x W_ih^T before its norm
  Tensor mean_x;  // (T*B, 1) its LN mean
  Tensor rstd_x;  // (T*B, 1) its LN 1 / std
  Tensor zhat;    // (T, B, 4H) h_{t-1} W_hh^T, normalised
  Tensor rstd_h;  // (T, B) 1 / std of each zhat row
  Tensor stat_c;  // (T, B, 2) mean and 1 / std of c~ over H
};

// What the forward keeps for the backward (and the trace): views of the kernels' pooled buffers.
struct ForwardSaved {
  Tensor gates;  // (T, B, 4H) activations i, f, g, o (with store_gates), else undefined
  Tensor c_all;  // (T+1, B, H) c after zoneout, c_all[0] = c0 (with store_gates); else two (B, H)
                 // states used in turn, (min(T+1, 2), B, H): not a history
  Tensor h_all;  // (T+1, B, R) h states, with lengths (y is 0 past a sequence's end, h is not)
  Tensor c_til;  // (T, B, H) c~ before zoneout, with zoneout_c and store_gates
  Tensor hc;     // (T, B, H) o * tanh(c~) before the projection, with a projection
  LayerNormSaved ln;
};

struct ForwardResult {
  Tensor y;    // (T, B, R)
  Tensor h_T;  // (B, R)
  Tensor c_T;  // (B, H)
  ForwardSaved saved;
};

// The gradients of the forward's outputs (undefined: zeros).
struct OutputGrads {
  Tensor dy;   // (T, B, R) (any strides)
  Tensor dh_T; // (B, R)
  Tensor dc_T; // (B, H)
};

// Which gradients the backward computes (the others are left undefined).
struct GradsWanted {
  bool x = false, h0 = false, c0 = false, w_ih = false, w_hh = false;
  bool bias = false;  // the one gradient of b_ih and of b_hh (the same: both add to a)
  bool w_hr = false, peep = false;
  bool ln = false;  // all six layer-norm parameters
};

// The gradients, in the shapes of what they are the gradient of; undefined where not wanted (or
// where the layer has no such parameter).
struct LayerGrads {
  Tensor x, h0, c0, w_ih, w_hh;
  Tensor bias;  // (4H,): the gradient of b_ih and of b_hh
  Tensor w_hr, peep;
  LayerNormParams ln;
};

// Forward of one layer, one direction, forward in time. store_gates: keep what the backward or a
// trace needs (gates, the history of c, c~); without it inference keeps the cell state in two
// buffers in turn.
ForwardResult fused_forward(const Tensor& x, const Tensor& h0, const Tensor& c0, const LayerParams& p,
                            const LayerOptions& o, bool store_gates);

// Backward of one layer, one direction: p and o as given to the forward (biases not needed),
// y and s as it returned them.
LayerGrads fused_backward(const Tensor& x, const Tensor& h0, const LayerParams& p, const LayerOptions& o,
                          const Tensor& y, const ForwardSaved& s, const OutputGrads& g, const GradsWanted& want);

// The outputs of the differentiable layer (lstm_autograd.cpp) as Python receives them.
struct LayerOutputs {
  Tensor y, h_T, c_T;
  Tensor gates;  // (T, B, 4H) with trace (not differentiable), else undefined (None)
  Tensor c;      // (T, B, H) with trace: the cell state after zoneout, 0 past a sequence's end
};

// The differentiable layer (a C++ autograd node; a plain forward when no gradient will be asked
// for): ln holds the six layer-norm tensors in LayerNormParams' order, or six Nones.
LayerOutputs fused_layer(const Tensor& x, const Tensor& h0, const Tensor& c0, const Tensor& w_ih, const Tensor& w_hh,
                         const c10::optional<Tensor>& b_ih, const c10::optional<Tensor>& b_hh,
                         const c10::optional<Tensor>& w_hr, const c10::optional<Tensor>& peep,
                         const std::vector<c10::optional<Tensor>>& ln, const c10::optional<Tensor>& zc,
                         const c10::optional<Tensor>& zh, const c10::optional<Tensor>& lengths, bool coupled,
                         bool trace, int64_t num_threads);

}  // namespace lstmkit
