// lstmkit fused kernels: the Python module (pybind11). Python calls these only through
// lstmkit.kernels (kernels/__init__.py), by keyword: the argument names below are that interface.
//
// Built on first use by lstmkit/kernels/_build.py through torch.utils.cpp_extension.load with
// -O3 -march=native -fopenmp. Where each part lives:
//   lstm_simd.h, lstm_gemm.h     SIMD vectors and activations; the register-blocked micro-kernel
//   lstm_team.h                  the threads of a call (Team, parallel_region)
//   lstm_loops.h                 buffer layouts and row helpers of the time loops;
//   lstm_forward_loop.h, lstm_backward_loop.h   the time loops (no torch)
//   lstm_tuning.h                the tuning rules (threads, splits, what runs in the loop)
//   lstm_pool.*                  the pool of large working buffers
//   lstm_pack.*                  torch layout -> packed panels
//   lstm_matmul.*                the whole-sequence products (input projection, dx, weight grads)
//   lstm_layer.*                 one layer's forward and backward, and the structs they pass
//   lstm_autograd.cpp            the differentiable layer (a C++ autograd node)
//   lstm_stream.*, lstm_int8.h   the float and the int8 streaming steps
#include <torch/extension.h>

#include <string>

#include "lstm_int8.h"
#include "lstm_layer.h"
#include "lstm_matmul.h"
#include "lstm_pack.h"
#include "lstm_pool.h"
#include "lstm_stream.h"
#include "lstm_tuning.h"

namespace py = pybind11;

std::string build_info() {
  return std::string("avx2=") + (lstmkit::compiled_with_avx2() ? "1" : "0") +
         " avx512=" + (lstmkit::compiled_with_avx512() ? "1" : "0") +
#if defined(__AVX512VNNI__) && defined(__AVX512VL__) || defined(__AVXVNNI__)
         " vnni=1" +
#else
         " vnni=0" +
#endif
#ifdef _OPENMP
         " openmp=1"
#else
         " openmp=0"
#endif
         + " lanes_f32=" + std::to_string(lstmkit::Vec<float>::L);
}


PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  py::class_<lstmkit::LayerOutputs>(m, "LayerOutputs", py::module_local())
      .def_readonly("y", &lstmkit::LayerOutputs::y)
      .def_readonly("h_T", &lstmkit::LayerOutputs::h_T)
      .def_readonly("c_T", &lstmkit::LayerOutputs::c_T)
      .def_readonly("gates", &lstmkit::LayerOutputs::gates)
      .def_readonly("c", &lstmkit::LayerOutputs::c);
  // The whole-sequence call runs for milliseconds: let other Python threads go meanwhile. The
  // streaming step (microseconds) keeps the GIL, which also serialises calls on one stream.
  m.def("fused_layer", &lstmkit::fused_layer, "fused LSTM layer, differentiable (a C++ autograd node)",
        py::arg("x"), py::arg("h0"), py::arg("c0"), py::arg("w_ih"), py::arg("w_hh"), py::arg("b_ih"),
        py::arg("b_hh"), py::arg("w_hr"), py::arg("peephole"), py::arg("ln"), py::arg("zoneout_c"),
        py::arg("zoneout_h"), py::arg("lengths"), py::arg("coupled"), py::arg("trace"), py::arg("num_threads"),
        py::call_guard<py::gil_scoped_release>());
  m.def("build_info", &build_info);
  m.def("contention_events", [] { return lstmkit::contention_events().load(); });
  m.def("release_buffers", [] { return lstmkit::BufferPool::instance().release(); });
  m.def("buffer_bytes", [] { return lstmkit::BufferPool::instance().bytes(); });
  // C = A @ Bm (+ bias) with the kernels' own GEMM (float32; for tests and benchmarks)
  m.def("gemm_rows", [](const at::Tensor& A, const at::Tensor& Bm, const c10::optional<at::Tensor>& bias,
                        int64_t num_threads) {
    TORCH_CHECK(A.scalar_type() == at::kFloat && Bm.scalar_type() == at::kFloat && A.dim() == 2 && Bm.dim() == 2 &&
                    A.size(1) == Bm.size(0),
                "lstmkit gemm_rows: float32 A (M, K) and Bm (K, N)");
    const at::Tensor a = A.contiguous();
    const at::Tensor panels = lstmkit::pack_panels(Bm.contiguous(), lstmkit::Vec<float>::L);
    at::Tensor c = at::empty({A.size(0), Bm.size(1)}, A.options());
    at::Tensor b = bias.has_value() && bias->defined() ? bias->contiguous() : at::Tensor();
    TORCH_CHECK(!b.defined() || b.numel() == Bm.size(1), "lstmkit gemm_rows: bias must be (N,)");
    const int nt = lstmkit::gemm_threads(num_threads, A.size(0) * A.size(1) * Bm.size(1));
    lstmkit::gemm_rows(a.data_ptr<float>(), a.size(1), a.size(0), a.size(1), panels.data_ptr<float>(), Bm.size(1),
                       c.data_ptr<float>(), b.defined() ? b.data_ptr<float>() : nullptr, nt);
    return c;
  }, py::arg("A"), py::arg("Bm"), py::arg("bias"), py::arg("num_threads"), py::call_guard<py::gil_scoped_release>());
  // how the time loops' threads share the work: 0 auto, 1 unit blocks, 2 batch rows where legal
  m.def("set_thread_split", [](int64_t mode) {
    TORCH_CHECK(mode >= 0 && mode <= 2, "lstmkit set_thread_split: mode must be 0 (auto), 1 (units) or 2 (rows)");
    lstmkit::split_override().store((int)mode);
  });
  py::class_<lstmkit::FusedStreamCpp>(m, "FusedStream", py::module_local())
      .def(py::init<const std::vector<at::Tensor>&, const std::vector<at::Tensor>&, const std::vector<at::Tensor>&,
                    const std::vector<at::Tensor>&, int64_t, int64_t, const std::vector<at::Tensor>&,
                    const std::vector<std::vector<at::Tensor>>&, bool, double, double>(),
           py::arg("w_ih"), py::arg("w_hh"), py::arg("bias"), py::arg("w_hr"), py::arg("batch_size"),
           py::arg("num_threads"), py::arg("peephole"), py::arg("ln"), py::arg("coupled"), py::arg("zoneout_c"),
           py::arg("zoneout_h"))
      .def("step", &lstmkit::FusedStreamCpp::step)
      .def("reset", &lstmkit::FusedStreamCpp::reset)
      .def("get_state", &lstmkit::FusedStreamCpp::get_state)
      .def("set_state", &lstmkit::FusedStreamCpp::set_state)
      .def("num_threads", &lstmkit::FusedStreamCpp::num_threads);
  py::class_<lstmkit::Int8StreamCpp>(m, "Int8Stream", py::module_local())
      .def(py::init<const std::vector<at::Tensor>&, const std::vector<at::Tensor>&, const std::vector<at::Tensor>&,
                    const std::vector<at::Tensor>&, const std::vector<at::Tensor>&, int64_t, int64_t>(),
           py::arg("q_ih"), py::arg("s_ih"), py::arg("q_hh"), py::arg("s_hh"), py::arg("bias"), py::arg("batch_size"),
           py::arg("num_threads"))
      .def("step", &lstmkit::Int8StreamCpp::step)
      .def("sequence", &lstmkit::Int8StreamCpp::sequence)
      .def("reset", &lstmkit::Int8StreamCpp::reset)
      .def("get_state", &lstmkit::Int8StreamCpp::get_state)
      .def("set_state", &lstmkit::Int8StreamCpp::set_state)
      .def("num_threads", &lstmkit::Int8StreamCpp::num_threads);
}
