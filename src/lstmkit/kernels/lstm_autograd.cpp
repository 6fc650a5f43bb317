// lstmkit fused kernels: the differentiable layer, a C++ autograd node (FusedLayerFn) around
// fused_forward / fused_backward (lstm_layer.h), and fused_layer, the call Python makes.
//
// The Python torch.autograd.Function it replaces cost 0.19-0.24 ms more per forward+backward at
// train-small (~2 %; median of 3000 paired calls): the Python node, its ctx and the GIL on the way
// into the backward. A C++ node runs its backward without Python.
#include <torch/csrc/autograd/custom_function.h>

#include <cstdint>
#include <vector>

#include "lstm_layer.h"
#include "lstm_tensors.h"

namespace lstmkit {

namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// The node's differentiable arguments, in the order FusedLayerFn::forward takes them (torch's
// Function::apply makes an input edge of each Tensor / optional Tensor argument, so they are
// positional there; everywhere else they are the named fields of LayerParams).
enum DiffSlot : int {
  kX, kH0, kC0, kWih, kWhh, kBih, kBhh, kWhr, kPeep,
  kGainIh, kShiftIh, kGainHh, kShiftHh, kGainC, kShiftC,
  kNumDiff
};
// The arguments after them: zoneout_c, zoneout_h, lengths, coupled, trace, grad, num_threads.
constexpr int kNumArgs = kNumDiff + 7;

// What the node saves for its backward, by name: ctx->save_for_backward takes a list, so the
// list's order is kept here and nowhere else (undefined tensors where a configuration has none).
enum SavedSlot : int {
  sX, sH0, sWih, sWhh, sWhr, sPeep, sZc, sZh, sLengths, sY,
  sGates, sCall, sHall, sCtil, sHc,
  sGainIh, sShiftIh, sGainHh, sShiftHh, sGainC, sShiftC,
  sZx, sMeanX, sRstdX, sZhat, sRstdH, sStatC,
  kNumSaved
};

std::vector<Tensor> to_saved_list(const Tensor& x, const Tensor& h0, const LayerParams& p, const LayerOptions& o,
                                  const ForwardResult& r) {
  std::vector<Tensor> v(kNumSaved);
  v[sX] = x, v[sH0] = h0, v[sWih] = p.w_ih, v[sWhh] = p.w_hh, v[sWhr] = p.w_hr, v[sPeep] = p.peep;
  v[sZc] = o.zoneout_c, v[sZh] = o.zoneout_h, v[sLengths] = o.lengths, v[sY] = r.y;
  const ForwardSaved& s = r.saved;
  v[sGates] = s.gates, v[sCall] = s.c_all, v[sHall] = s.h_all, v[sCtil] = s.c_til, v[sHc] = s.hc;
  v[sGainIh] = p.ln.gain_ih, v[sShiftIh] = p.ln.shift_ih, v[sGainHh] = p.ln.gain_hh;
  v[sShiftHh] = p.ln.shift_hh, v[sGainC] = p.ln.gain_c, v[sShiftC] = p.ln.shift_c;
  v[sZx] = s.ln.zx, v[sMeanX] = s.ln.mean_x, v[sRstdX] = s.ln.rstd_x;
  v[sZhat] = s.ln.zhat, v[sRstdH] = s.ln.rstd_h, v[sStatC] = s.ln.stat_c;
  return v;
}

// The inverse of to_saved_list (biases are not saved: the backward does not read them).
void from_saved_list(const std::vector<Tensor>& v, LayerParams& p, LayerOptions& o, ForwardSaved& s) {
  p.w_ih = v[sWih], p.w_hh = v[sWhh], p.w_hr = v[sWhr], p.peep = v[sPeep];
  p.ln = {v[sGainIh], v[sShiftIh], v[sGainHh], v[sShiftHh], v[sGainC], v[sShiftC]};
  o.zoneout_c = v[sZc], o.zoneout_h = v[sZh], o.lengths = v[sLengths];
  s.gates = v[sGates], s.c_all = v[sCall], s.h_all = v[sHall], s.c_til = v[sCtil], s.hc = v[sHc];
  s.ln = {v[sZx], v[sMeanX], v[sRstdX], v[sZhat], v[sRstdH], v[sStatC]};
}

struct FusedLayerFn : public torch::autograd::Function<FusedLayerFn> {
  // Outputs: y, h_T, c_T, and with trace the gates (T, B, 4H) and c (T, B, H), not differentiable.
  static variable_list forward(AutogradContext* ctx, const Tensor& x, const Tensor& h0, const Tensor& c0,
                               const Tensor& w_ih, const Tensor& w_hh, const optional<Tensor>& b_ih,
                               const optional<Tensor>& b_hh, const optional<Tensor>& w_hr,
                               const optional<Tensor>& peep, const optional<Tensor>& g_ih,
                               const optional<Tensor>& s_ih, const optional<Tensor>& g_hh,
                               const optional<Tensor>& s_hh, const optional<Tensor>& g_c,
                               const optional<Tensor>& s_c, const optional<Tensor>& zc,
                               const optional<Tensor>& zh, const optional<Tensor>& lengths, bool coupled,
                               bool trace, bool grad, int64_t num_threads) {
    const int n_ln = has(g_ih) + has(s_ih) + has(g_hh) + has(s_hh) + has(g_c) + has(s_c);
    TORCH_CHECK(n_ln == 0 || n_ln == 6, "lstmkit fused kernel: give all 6 layer-norm tensors or none");
    LayerParams p;
    p.w_ih = w_ih, p.w_hh = w_hh, p.b_ih = or_undefined(b_ih), p.b_hh = or_undefined(b_hh);
    p.w_hr = or_undefined(w_hr), p.peep = or_undefined(peep);
    if (n_ln == 6) p.ln = {*g_ih, *s_ih, *g_hh, *s_hh, *g_c, *s_c};
    LayerOptions o;
    o.zoneout_c = or_undefined(zc), o.zoneout_h = or_undefined(zh), o.lengths = or_undefined(lengths);
    o.coupled = coupled, o.num_threads = num_threads;
    const ForwardResult r = fused_forward(x, h0, c0, p, o, grad || trace);
    if (grad) {
      // which slots were given (an absent optional is not an input of the node, so the node's
      // input edges are numbered over the given slots only; a Tensor argument always is one)
      const optional<Tensor>* opt[kNumDiff - kBih] = {&b_ih, &b_hh, &w_hr, &peep, &g_ih,
                                                       &s_ih, &g_hh, &s_hh, &g_c, &s_c};
      std::vector<int64_t> edge(kNumDiff, -1);
      int64_t e = 0;
      for (int k = 0; k < kNumDiff; ++k) {
        const bool given = k < kBih || has(*opt[k - kBih]);
        if (given) edge[k] = e++;
      }
      ctx->save_for_backward(to_saved_list(x, h0, p, o, r));
      ctx->saved_data["edge"] = c10::IValue(edge);
      ctx->saved_data["coupled"] = coupled;
      ctx->saved_data["nt"] = num_threads;
      ctx->set_materialize_grads(false);  // absent grads of h_T / c_T stay undefined (read as zeros)
    }
    if (!trace) return {r.y, r.h_T, r.c_T};
    const Tensor& call = r.saved.c_all;
    Tensor c_trace = call.narrow(0, 1, x.size(0));
    if (has(lengths)) {  // the trace is 0 past the end of a sequence (the state is carried)
      Tensor steps = at::arange(x.size(0), lengths->options()).unsqueeze(1);
      c_trace = c_trace * steps.lt(lengths->unsqueeze(0)).unsqueeze(2).to(call.scalar_type());
    }
    ctx->mark_non_differentiable({r.saved.gates, c_trace});
    return {r.y, r.h_T, r.c_T, r.saved.gates, c_trace};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    // The gradients below are computed outside autograd: with create_graph=True they would come
    // back without a graph and second derivatives would silently miss this layer.
    TORCH_CHECK(!at::GradMode::is_enabled(),
                "lstmkit: the fused LSTM kernels have no second derivative (backward with create_graph=True); "
                "run the layer with backend='reference' for higher-order gradients");
    const auto saved = ctx->get_saved_variables();
    const auto edge = ctx->saved_data["edge"].toIntVector();
    bool n[kNumDiff];
    for (int k = 0; k < kNumDiff; ++k) n[k] = edge[k] >= 0 && ctx->needs_input_grad(edge[k]);
    LayerParams p;
    LayerOptions o;
    ForwardSaved s;
    from_saved_list(saved, p, o, s);
    o.coupled = ctx->saved_data["coupled"].toBool();
    o.num_threads = ctx->saved_data["nt"].toInt();
    GradsWanted want;
    want.x = n[kX], want.h0 = n[kH0], want.c0 = n[kC0], want.w_ih = n[kWih], want.w_hh = n[kWhh];
    want.bias = n[kBih] || n[kBhh], want.w_hr = n[kWhr], want.peep = n[kPeep];
    want.ln = p.ln.defined() &&
              (n[kGainIh] || n[kShiftIh] || n[kGainHh] || n[kShiftHh] || n[kGainC] || n[kShiftC]);
    OutputGrads g;
    g.dy = grads[0], g.dh_T = grads[1], g.dc_T = grads[2];
    const LayerGrads r = fused_backward(saved[sX], saved[sH0], p, o, saved[sY], s, g, want);
    variable_list out(kNumArgs);  // one per forward argument, undefined where no gradient
    const Tensor* from[kNumDiff] = {&r.x,       &r.h0,       &r.c0,       &r.w_ih,      &r.w_hh,
                                    &r.bias,    &r.bias,     &r.w_hr,     &r.peep,      &r.ln.gain_ih,
                                    &r.ln.shift_ih, &r.ln.gain_hh, &r.ln.shift_hh, &r.ln.gain_c, &r.ln.shift_c};
    for (int k = 0; k < kNumDiff; ++k)
      if (n[k]) out[k] = *from[k];
    return out;
  }
};

}  // namespace

// The differentiable layer as Python calls it: a plain forward when no gradient will be asked for.
LayerOutputs fused_layer(const Tensor& x, const Tensor& h0, const Tensor& c0, const Tensor& w_ih, const Tensor& w_hh,
                         const optional<Tensor>& b_ih, const optional<Tensor>& b_hh, const optional<Tensor>& w_hr,
                         const optional<Tensor>& peep, const std::vector<optional<Tensor>>& ln,
                         const optional<Tensor>& zc, const optional<Tensor>& zh, const optional<Tensor>& lengths,
                         bool coupled, bool trace, int64_t num_threads) {
  TORCH_CHECK(ln.size() == 6, "lstmkit fused kernel: ln must hold 6 entries (tensors or None)");
  bool grad = false;
  if (at::GradMode::is_enabled()) {
    for (const Tensor* t : {&x, &h0, &c0, &w_ih, &w_hh}) grad = grad || t->requires_grad();
    for (const optional<Tensor>* t : {&b_ih, &b_hh, &w_hr, &peep}) grad = grad || (has(*t) && (*t)->requires_grad());
    for (const auto& t : ln) grad = grad || (has(t) && t->requires_grad());
  }
  const variable_list v = FusedLayerFn::apply(x, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, peep, ln[0], ln[1], ln[2],
                                              ln[3], ln[4], ln[5], zc, zh, lengths, coupled, trace, grad, num_threads);
  LayerOutputs out;
  out.y = v[0], out.h_T = v[1], out.c_T = v[2];
  if (trace) out.gates = v[3], out.c = v[4];
  return out;
}

}  // namespace lstmkit
