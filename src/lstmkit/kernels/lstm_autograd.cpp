// lstmkit fused kernels: the differentiable layer, a C++ autograd node (FusedLayerFn) around
// fused_forward / fused_backward (lstm_layer.h), and fused_layer, the call Python makes; and the
// same layer as the operators torch.compile records (lstmkit::fused_layer and its backward, at the end).
//
// The Python torch.autograd.Function it replaces cost 0.19-0.24 ms more per forward+backward at
// train-small (~2 %; median of 3000 paired calls): the Python node, its ctx and the GIL on the way
// into the backward. A C++ node runs its backward without Python.
#include <torch/csrc/autograd/custom_function.h>
#include <torch/library.h>

#include <array>
#include <cstdint>
#include <mutex>
#include <tuple>
#include <memory>
#include <unordered_map>
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

LayerParams make_params(const Tensor& w_ih, const Tensor& w_hh, const optional<Tensor>& b_ih,
                        const optional<Tensor>& b_hh, const optional<Tensor>& w_hr, const optional<Tensor>& peep,
                        const optional<Tensor>& g_ih, const optional<Tensor>& s_ih, const optional<Tensor>& g_hh,
                        const optional<Tensor>& s_hh, const optional<Tensor>& g_c, const optional<Tensor>& s_c) {
  const int n_ln = has(g_ih) + has(s_ih) + has(g_hh) + has(s_hh) + has(g_c) + has(s_c);
  TORCH_CHECK(n_ln == 0 || n_ln == 6, "lstmkit fused kernel: give all 6 layer-norm tensors or none");
  LayerParams p;
  p.w_ih = w_ih, p.w_hh = w_hh, p.b_ih = or_undefined(b_ih), p.b_hh = or_undefined(b_hh);
  p.w_hr = or_undefined(w_hr), p.peep = or_undefined(peep);
  if (n_ln == 6) p.ln = {*g_ih, *s_ih, *g_hh, *s_hh, *g_c, *s_c};
  return p;
}

LayerOptions make_options(const optional<Tensor>& zc, const optional<Tensor>& zh, const optional<Tensor>& lengths,
                          bool coupled, int64_t num_threads) {
  LayerOptions o;
  o.zoneout_c = or_undefined(zc), o.zoneout_h = or_undefined(zh), o.lengths = or_undefined(lengths);
  o.coupled = coupled, o.num_threads = num_threads;
  return o;
}

// The trace's cell states (T, B, H): the history after c0, 0 past the end of a sequence (the state
// is carried there). A view of the forward's buffer without lengths.
Tensor trace_c(const ForwardResult& r, int64_t T, const optional<Tensor>& lengths) {
  Tensor c_trace = r.saved.c_all.narrow(0, 1, T);
  if (has(lengths)) {
    Tensor steps = at::arange(T, lengths->options()).unsqueeze(1);
    c_trace = c_trace * steps.lt(lengths->unsqueeze(0)).unsqueeze(2).to(r.saved.c_all.scalar_type());
  }
  return c_trace;
}

// The backward from a saved list (to_saved_list's), for the differentiable slots marked in n.
LayerGrads run_backward(const std::vector<Tensor>& saved, bool coupled, int64_t num_threads, const bool* n,
                        const OutputGrads& g) {
  LayerParams p;
  LayerOptions o;
  ForwardSaved s;
  from_saved_list(saved, p, o, s);
  o.coupled = coupled, o.num_threads = num_threads;
  GradsWanted want;
  want.x = n[kX], want.h0 = n[kH0], want.c0 = n[kC0], want.w_ih = n[kWih], want.w_hh = n[kWhh];
  want.bias = n[kBih] || n[kBhh], want.w_hr = n[kWhr], want.peep = n[kPeep];
  want.ln = p.ln.defined() &&
            (n[kGainIh] || n[kShiftIh] || n[kGainHh] || n[kShiftHh] || n[kGainC] || n[kShiftC]);
  return fused_backward(saved[sX], saved[sH0], p, o, saved[sY], s, g, want);
}

// The gradient of each differentiable slot in a LayerGrads (b_ih and b_hh share one).
std::array<const Tensor*, kNumDiff> grad_slots(const LayerGrads& r) {
  return {&r.x,    &r.h0,   &r.c0,         &r.w_ih,        &r.w_hh,        &r.bias,       &r.bias,      &r.w_hr,
          &r.peep, &r.ln.gain_ih, &r.ln.shift_ih, &r.ln.gain_hh, &r.ln.shift_hh, &r.ln.gain_c, &r.ln.shift_c};
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
    const LayerParams p = make_params(w_ih, w_hh, b_ih, b_hh, w_hr, peep, g_ih, s_ih, g_hh, s_hh, g_c, s_c);
    const LayerOptions o = make_options(zc, zh, lengths, coupled, num_threads);
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
    const Tensor c_trace = trace_c(r, x.size(0), lengths);
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
    OutputGrads g;
    g.dy = grads[0], g.dh_T = grads[1], g.dc_T = grads[2];
    const LayerGrads r = run_backward(saved, ctx->saved_data["coupled"].toBool(), ctx->saved_data["nt"].toInt(), n, g);
    variable_list out(kNumArgs);  // one per forward argument, undefined where no gradient
    const auto from = grad_slots(r);
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

// ================================================================================================
// The layer as two operators, for torch.compile: lstmkit::fused_layer and lstmkit::fused_layer_backward
// ================================================================================================
// Their schemas, fake implementations and documentation are in lstmkit/core/ops.py (defined there,
// so that they exist without the kernels); here are their CPU kernels and the autograd kernel that
// joins them. Everything between a compiled graph and the kernels is C++: the Python operators
// they replace cost 0.4-1.4 ms a call at train-small (BENCHMARKS.md "Speed: torch.compile").
//
// The forward keeps what the backward needs in a table, under the address of the one-byte
// ``handle`` output; the handle's storage frees the entry when the last reference to the handle goes
// (the caller's autograd graph, or the compiled graph's saved tensors, after their backward). So
// the saved state crosses the graph boundary as one opaque tensor whose shape the fake
// implementation knows, whatever the configuration saves. The live states are kept in a table by
// the handle's address: a handle that is not one of them (a copy, a freed graph) is an error, not a
// crash.
namespace {

struct OpSaved {
  std::vector<Tensor> saved;  // to_saved_list's
  bool coupled = false;
};

// The live saved states, by the address of their handle's byte. Never destroyed (leaked on purpose):
// a handle freed while the process exits, after static destructors ran, must still find them.
std::mutex& live_mutex() {
  static auto* m = new std::mutex;
  return *m;
}
std::unordered_map<const void*, std::unique_ptr<OpSaved>>& live_states() {
  static auto* s = new std::unordered_map<const void*, std::unique_ptr<OpSaved>>;
  return *s;
}

// A one-byte tensor holding 0 (so that two runs' handles compare equal) whose storage, when freed,
// frees the saved state.
Tensor make_handle(std::vector<Tensor> saved, bool coupled) {
  auto* byte = new uint8_t(0);
  {
    std::lock_guard<std::mutex> lock(live_mutex());
    live_states()[byte] = std::make_unique<OpSaved>(OpSaved{std::move(saved), coupled});
  }
  auto free_state = [](void* p) {
    std::unique_ptr<OpSaved> gone;  // destroyed after the lock is released
    {
      std::lock_guard<std::mutex> lock(live_mutex());
      auto it = live_states().find(p);
      if (it != live_states().end()) {
        gone = std::move(it->second);
        live_states().erase(it);
      }
    }
    delete static_cast<uint8_t*>(p);
  };
  return at::from_blob(byte, {1}, free_state, at::TensorOptions().dtype(at::kByte));
}

// The state a handle owns (alive while the handle is: the caller holds it).
const OpSaved& saved_of(const Tensor& handle) {
  const void* p = handle.defined() && handle.numel() == 1 ? handle.data_ptr() : nullptr;
  std::lock_guard<std::mutex> lock(live_mutex());
  auto it = live_states().find(p);
  TORCH_CHECK(p != nullptr && it != live_states().end(),
              "lstmkit::fused_layer_backward: the forward's saved state is gone (a second backward through a "
              "freed graph, or the handle was copied); run the forward again");
  return *it->second;
}

// t itself if it is contiguous from its storage's start, else a contiguous copy (what the fake
// implementation promises); a copy too if its storage is already one of the seen ones (an operator's
// outputs share no memory, with each other or with the given tensors).
Tensor own(const Tensor& t, std::vector<const void*>& seen) {
  Tensor u = t.is_contiguous() && t.storage_offset() == 0 ? t : t.clone(at::MemoryFormat::Contiguous);
  if (u.numel() == 0) return u;
  const void* key = u.storage().unsafeGetStorageImpl();
  for (const void* s : seen)
    if (s == key) {
      u = u.clone(at::MemoryFormat::Contiguous);
      key = u.storage().unsafeGetStorageImpl();
      break;
    }
  seen.push_back(key);
  return u;
}

using OpOutputs = std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor, Tensor>;

// lstmkit::fused_layer's CPU kernel: (y, h_T, c_T, gates, c, handle); gates and c empty without
// trace; the handle owns the saved state when needs (the bit mask of inputs wanting a gradient) is
// not 0.
OpOutputs op_forward(const Tensor& x, const Tensor& h0, const Tensor& c0, const Tensor& w_ih, const Tensor& w_hh,
                     const optional<Tensor>& b_ih, const optional<Tensor>& b_hh, const optional<Tensor>& w_hr,
                     const optional<Tensor>& peep, const optional<Tensor>& g_ih, const optional<Tensor>& s_ih,
                     const optional<Tensor>& g_hh, const optional<Tensor>& s_hh, const optional<Tensor>& g_c,
                     const optional<Tensor>& s_c, const optional<Tensor>& zc, const optional<Tensor>& zh,
                     const optional<Tensor>& lengths, bool coupled, bool trace, int64_t needs) {
  const LayerParams p = make_params(w_ih, w_hh, b_ih, b_hh, w_hr, peep, g_ih, s_ih, g_hh, s_hh, g_c, s_c);
  const LayerOptions o = make_options(zc, zh, lengths, coupled, 0);
  const ForwardResult r = fused_forward(x, h0, c0, p, o, needs != 0 || trace);
  std::vector<const void*> seen;
  Tensor y = own(r.y, seen), h_t = own(r.h_T, seen), c_t = own(r.c_T, seen);
  Tensor gates = trace ? own(r.saved.gates, seen) : at::empty({0}, x.options());
  Tensor c_all = trace ? own(trace_c(r, x.size(0), lengths), seen) : at::empty({0}, x.options());
  Tensor handle = needs != 0 ? make_handle(to_saved_list(x, h0, p, o, r), coupled)
                             : at::zeros({1}, at::TensorOptions().dtype(at::kByte));
  return {y, h_t, c_t, gates, c_all, handle};
}

// lstmkit::fused_layer_backward's CPU kernel: the gradients of the inputs that needs marks, in
// argument order (inputs: the 15 differentiable inputs as given to the forward, for their shapes).
std::vector<Tensor> op_backward(const Tensor& handle, const optional<Tensor>& dy, const optional<Tensor>& dh,
                                const optional<Tensor>& dc, const c10::List<optional<Tensor>>& inputs,
                                int64_t needs) {
  const OpSaved& st = saved_of(handle);
  bool n[kNumDiff];
  for (int k = 0; k < kNumDiff; ++k) n[k] = (needs >> k & 1) != 0;
  OutputGrads g;
  g.dy = or_undefined(dy), g.dh_T = or_undefined(dh), g.dc_T = or_undefined(dc);
  const LayerGrads r = run_backward(st.saved, st.coupled, 0, n, g);
  std::vector<const void*> seen;
  for (const Tensor* t : {&g.dy, &g.dh_T, &g.dc_T})
    if (t->defined() && t->numel()) seen.push_back(t->storage().unsafeGetStorageImpl());
  const auto from = grad_slots(r);
  std::vector<Tensor> out;
  for (int k = 0; k < kNumDiff; ++k) {
    if (!n[k]) continue;
    const optional<Tensor> in = inputs.get(k);
    TORCH_CHECK(has(in), "lstmkit::fused_layer_backward: needs marks input ", k, ", which is None");
    out.push_back(from[k]->defined() ? own(*from[k], seen) : at::zeros_like(*in));
  }
  return out;
}

// The autograd kernel of lstmkit::fused_layer: the forward operator below autograd, the backward
// operator in the backward (both through the dispatcher, so that graph capture records them).
struct FusedLayerOpFn : public torch::autograd::Function<FusedLayerOpFn> {
  static variable_list forward(AutogradContext* ctx, const Tensor& x, const Tensor& h0, const Tensor& c0,
                               const Tensor& w_ih, const Tensor& w_hh, const optional<Tensor>& b_ih,
                               const optional<Tensor>& b_hh, const optional<Tensor>& w_hr,
                               const optional<Tensor>& peep, const optional<Tensor>& g_ih,
                               const optional<Tensor>& s_ih, const optional<Tensor>& g_hh,
                               const optional<Tensor>& s_hh, const optional<Tensor>& g_c,
                               const optional<Tensor>& s_c, const optional<Tensor>& zc,
                               const optional<Tensor>& zh, const optional<Tensor>& lengths, bool coupled,
                               bool trace, int64_t needs) {
    static auto op = c10::Dispatcher::singleton()
                         .findSchemaOrThrow("lstmkit::fused_layer", "")
                         .typed<decltype(op_forward)>();
    OpOutputs outs;
    {
      at::AutoDispatchBelowADInplaceOrView guard;
      outs = op.call(x, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, peep, g_ih, s_ih, g_hh, s_hh, g_c, s_c, zc, zh,
                     lengths, coupled, trace, needs);
    }
    auto& [y, h_t, c_t, gates, c_all, handle] = outs;
    std::vector<Tensor> keep = {handle, x, h0, c0, w_ih, w_hh};
    for (const optional<Tensor>* t : {&b_ih, &b_hh, &w_hr, &peep, &g_ih, &s_ih, &g_hh, &s_hh, &g_c, &s_c})
      keep.push_back(or_undefined(*t));
    ctx->save_for_backward(keep);
    ctx->saved_data["needs"] = needs;
    ctx->set_materialize_grads(false);
    ctx->mark_non_differentiable({gates, c_all, handle});
    return {y, h_t, c_t, gates, c_all, handle};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    static auto op = c10::Dispatcher::singleton()
                         .findSchemaOrThrow("lstmkit::fused_layer_backward", "")
                         .typed<decltype(op_backward)>();
    const auto saved = ctx->get_saved_variables();
    const int64_t needs = ctx->saved_data["needs"].toInt();
    c10::List<optional<Tensor>> inputs;
    for (int k = 0; k < kNumDiff; ++k)
      inputs.push_back(saved[k + 1].defined() ? optional<Tensor>(saved[k + 1]) : optional<Tensor>());
    auto opt = [](const Tensor& t) { return t.defined() ? optional<Tensor>(t) : optional<Tensor>(); };
    variable_list out(kNumDiff + 6);  // one per forward argument (the tensors, then 6 others)
    if (needs == 0) return out;
    const std::vector<Tensor> got = op.call(saved[0], opt(grads[0]), opt(grads[1]), opt(grads[2]), inputs, needs);
    size_t j = 0;
    for (int k = 0; k < kNumDiff; ++k)
      if (needs >> k & 1) out[k] = got[j++];
    return out;
  }
};

OpOutputs op_autograd(const Tensor& x, const Tensor& h0, const Tensor& c0, const Tensor& w_ih, const Tensor& w_hh,
                      const optional<Tensor>& b_ih, const optional<Tensor>& b_hh, const optional<Tensor>& w_hr,
                      const optional<Tensor>& peep, const optional<Tensor>& g_ih, const optional<Tensor>& s_ih,
                      const optional<Tensor>& g_hh, const optional<Tensor>& s_hh, const optional<Tensor>& g_c,
                      const optional<Tensor>& s_c, const optional<Tensor>& zc, const optional<Tensor>& zh,
                      const optional<Tensor>& lengths, bool coupled, bool trace, int64_t needs) {
  const variable_list v = FusedLayerOpFn::apply(x, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, peep, g_ih, s_ih, g_hh,
                                                s_hh, g_c, s_c, zc, zh, lengths, coupled, trace, needs);
  return {v[0], v[1], v[2], v[3], v[4], v[5]};
}

// lstmkit::zeros: zeros of a shape with like's dtype and device (see ops.py).
Tensor op_zeros(const Tensor& like, c10::SymIntArrayRef shape) {
  return at::zeros_symint(shape, like.options());
}

}  // namespace

}  // namespace lstmkit

TORCH_LIBRARY_IMPL(lstmkit, CPU, m) {
  m.impl("fused_layer", &lstmkit::op_forward);
  m.impl("fused_layer_backward", &lstmkit::op_backward);
  m.impl("zeros", &lstmkit::op_zeros);
}

TORCH_LIBRARY_IMPL(lstmkit, Autograd, m) { m.impl("fused_layer", &lstmkit::op_autograd); }
