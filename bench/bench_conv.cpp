// bench_conv: the conv2d kernel family on the U-Net's convolution shapes (batch 64), forward,
// input gradient and weight gradient, next to oneDNN in the same process when it was found at
// configure time.
//
// Legend as in tensor/kernels/conv2d.h: B, C, H, W = input; O = output channels; k = kernel
// size; s = stride; padding is 1 for 3x3 and 0 for 1x1. Passes: fwd (y from x, w, bias),
// dX (dx from dy, w), dW (dw and dbias from x, dy).
//
// Rows are named  kernel/shape/pass/BxCxHxW-Ok_s/threads:T  and report:
//   GFLOP      a rate: 2 * B * O * HO * WO * C * k * k per iteration, shown as GFLOP/s
//   vs_onednn  this row's GFLOP/s over oneDNN's on the same shape, pass and thread count, in this
//              process (the oneDNN row runs first; if it was filtered out it is measured on the
//              spot). Only when built with oneDNN.
// The oneDNN rows use its convolution_forward / _backward_data / _backward_weights primitives on
// plain NCHW / OIHW f32 memory (the layout the ops use; no reorders are timed); the label says
// which implementation oneDNN chose.
// Rows with 1 thread are timed in CPU time of the benchmark thread (time spent preempted on a
// shared machine does not count); rows with 2 threads in wall time.
//
//   ./build/bench/bench_conv --benchmark_out=conv.json --benchmark_out_format=json
//   python3 scripts/bench_conv_table.py conv.json
#include <benchmark/benchmark.h>

#include <time.h>

#include <chrono>
#include <cstdint>
#include <map>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "bench/bench_clock.h"
#include "tensor/inkgrad.h"
#include "tensor/kernels/conv2d.h"
#include "tensor/kernels/sgemm.h"
#include "tensor/parallel.h"
#include "tensor/random.h"

#ifdef INK_HAVE_ONEDNN
#include <omp.h>

#include <oneapi/dnnl/dnnl.hpp>
#endif

namespace {

using ink::kernels::Conv2dGeometry;

enum class Pass { Forward, Input, Weight };

const char* pass_name(Pass p) {
  return p == Pass::Forward ? "fwd" : p == Pass::Input ? "dX" : "dW";
}

struct Shape {
  std::string name;
  Conv2dGeometry g;

  std::string dims() const {
    return std::to_string(g.B) + "x" + std::to_string(g.C) + "x" + std::to_string(g.H) + "x" +
           std::to_string(g.W) + "-" + std::to_string(g.O) + "k" + std::to_string(g.KH) + "s" +
           std::to_string(g.stride);
  }
  std::string key(Pass p, int threads) const {
    return name + "/" + pass_name(p) + "/" + std::to_string(threads);
  }
};

Shape make_shape(const std::string& name, int64_t C, int64_t HW, int64_t O, int64_t k,
                 int64_t stride) {
  Conv2dGeometry g;
  g.B = 64, g.C = C, g.H = g.W = HW, g.O = O, g.KH = g.KW = k, g.stride = stride;
  g.padding = k == 3 ? 1 : 0;
  return {name, g};
}

// The U-Net's convolutions: 3x3 at each resolution and width, the stride-2 downsampling convs,
// and 1x1 skip projections.
std::vector<Shape> all_shapes() {
  return {
      make_shape("c32.28", 32, 28, 32, 3, 1),        make_shape("c64.28", 64, 28, 64, 3, 1),
      make_shape("c64.14", 64, 14, 64, 3, 1),        make_shape("c128.14", 128, 14, 128, 3, 1),
      make_shape("c128.7", 128, 7, 128, 3, 1),       make_shape("down.c32.28", 32, 28, 32, 3, 2),
      make_shape("down.c64.14", 64, 14, 64, 3, 2),   make_shape("skip.c64.28", 64, 28, 32, 1, 1),
      make_shape("skip.c128.14", 128, 14, 64, 1, 1),
  };
}

struct Operands {
  std::vector<float> x, w, bias, y, dy, dx, dw, dbias;

  explicit Operands(const Conv2dGeometry& g) {
    ink::Generator gen(1234);
    const auto fill = [&](std::vector<float>& v, int64_t n) {
      v.resize(static_cast<size_t>(n));
      for (float& e : v) e = gen.uniform(-1.0f, 1.0f);
    };
    fill(x, g.B * g.C * g.H * g.W);
    fill(w, g.O * g.CKK());
    fill(bias, g.O);
    fill(dy, g.B * g.O * g.HO() * g.WO());
    y.assign(dy.size(), 0.0f);
    dx.assign(x.size(), 0.0f);
    dw.assign(w.size(), 0.0f);
    dbias.assign(bias.size(), 0.0f);
  }
};

#ifdef INK_HAVE_ONEDNN
std::map<std::string, double>& onednn_rates() {
  static std::map<std::string, double> rates;
  return rates;
}

// One oneDNN primitive for a shape and pass, with its memory, on plain NCHW f32.
class OnednnConv {
 public:
  OnednnConv(const Shape& s, Pass pass, Operands& op)
      : engine_(dnnl::engine::kind::cpu, 0), stream_(engine_) {
    using dnnl::memory;
    using tag = memory::format_tag;
    const Conv2dGeometry& g = s.g;
    const memory::desc src({g.B, g.C, g.H, g.W}, memory::data_type::f32, tag::nchw);
    const memory::desc weights({g.O, g.C, g.KH, g.KW}, memory::data_type::f32, tag::oihw);
    const memory::desc bias({g.O}, memory::data_type::f32, tag::x);
    const memory::desc dst({g.B, g.O, g.HO(), g.WO()}, memory::data_type::f32, tag::nchw);
    const memory::dims strides = {g.stride, g.stride}, pad = {g.padding, g.padding};
    const auto algo = dnnl::algorithm::convolution_direct;
    const dnnl::convolution_forward::primitive_desc fwd_pd(
        dnnl::convolution_forward::desc(dnnl::prop_kind::forward_training, algo, src, weights, bias,
                                        dst, strides, pad, pad),
        engine_);
    const auto mem = [&](const memory::desc& md, std::vector<float>& v) {
      return memory(md, engine_, v.data());
    };
    if (pass == Pass::Forward) {
      primitive_ = dnnl::convolution_forward(fwd_pd);
      impl_ = fwd_pd.impl_info_str();
      args_ = {{DNNL_ARG_SRC, mem(src, op.x)},
               {DNNL_ARG_WEIGHTS, mem(weights, op.w)},
               {DNNL_ARG_BIAS, mem(bias, op.bias)},
               {DNNL_ARG_DST, mem(dst, op.y)}};
    } else if (pass == Pass::Input) {
      const dnnl::convolution_backward_data::primitive_desc pd(
          dnnl::convolution_backward_data::desc(algo, src, weights, dst, strides, pad, pad),
          engine_, fwd_pd);
      primitive_ = dnnl::convolution_backward_data(pd);
      impl_ = pd.impl_info_str();
      args_ = {{DNNL_ARG_DIFF_DST, mem(dst, op.dy)},
               {DNNL_ARG_WEIGHTS, mem(weights, op.w)},
               {DNNL_ARG_DIFF_SRC, mem(src, op.dx)}};
    } else {
      const dnnl::convolution_backward_weights::primitive_desc pd(
          dnnl::convolution_backward_weights::desc(algo, src, weights, bias, dst, strides, pad,
                                                   pad),
          engine_, fwd_pd);
      primitive_ = dnnl::convolution_backward_weights(pd);
      impl_ = pd.impl_info_str();
      args_ = {{DNNL_ARG_SRC, mem(src, op.x)},
               {DNNL_ARG_DIFF_DST, mem(dst, op.dy)},
               {DNNL_ARG_DIFF_WEIGHTS, mem(weights, op.dw)},
               {DNNL_ARG_DIFF_BIAS, mem(bias, op.dbias)}};
    }
  }

  void run() {
    primitive_.execute(stream_, args_);
    stream_.wait();
  }
  const std::string& impl() const { return impl_; }

 private:
  dnnl::engine engine_;
  dnnl::stream stream_;
  dnnl::primitive primitive_;
  std::unordered_map<int, dnnl::memory> args_;
  std::string impl_;
};

// When the oneDNN row was filtered out: time it here, for at least 0.2 s.
double measure_onednn(const Shape& s, Pass pass, int threads) {
  omp_set_num_threads(threads);
  Operands op(s.g);
  OnednnConv conv(s, pass, op);
  conv.run();
  return ink::bench::measure_rate(s.g.flops(), threads, [&] { conv.run(); });
}

void bm_onednn(benchmark::State& state, const Shape& s, Pass pass, int threads) {
  omp_set_num_threads(threads);  // before the primitive is made: it plans for this many
  Operands op(s.g);
  OnednnConv conv(s, pass, op);
  conv.run();  // warm up: OpenMP starts its threads on first use
  const double rate = ink::bench::timed_loop(state, s.g.flops(), threads, [&] { conv.run(); });
  onednn_rates()[s.key(pass, threads)] = rate;
  state.counters["vs_onednn"] = 1.0;
  state.SetLabel(conv.impl());
}
#endif

void bm_kernel(benchmark::State& state, const Shape& s, Pass pass,
               const ink::kernels::Conv2dKernel& k, int threads) {
#ifdef INK_HAVE_ONEDNN
  auto it = onednn_rates().find(s.key(pass, threads));
  const double reference =
      it != onednn_rates().end() ? it->second : measure_onednn(s, pass, threads);
  // OpenMP's idle threads spin for a while after a call; let them sleep before we start.
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
#endif
  ink::set_num_threads(threads);
  Operands op(s.g);
  const auto call = [&] {
    switch (pass) {
      case Pass::Forward:
        k.forward(s.g, op.x.data(), op.w.data(), op.bias.data(), op.y.data());
        break;
      case Pass::Input:
        k.backward_input(s.g, op.dy.data(), op.w.data(), op.dx.data());
        break;
      case Pass::Weight:
        k.backward_weight(s.g, op.x.data(), op.dy.data(), op.dw.data(), op.dbias.data());
        break;
    }
  };
  call();  // warm up: buffers, thread pool
  const double rate = ink::bench::timed_loop(state, s.g.flops(), threads, call);
#ifdef INK_HAVE_ONEDNN
  state.counters["vs_onednn"] = rate / reference;
#else
  (void)rate;
#endif
}

void register_all() {
  for (const Shape& s : all_shapes()) {
    for (Pass pass : {Pass::Forward, Pass::Input, Pass::Weight}) {
      for (int threads : {1, 2}) {
        const std::string suffix = "/" + s.name + "/" + pass_name(pass) + "/" + s.dims() +
                                   "/threads:" + std::to_string(threads);
#ifdef INK_HAVE_ONEDNN
        auto* reference =
            benchmark::RegisterBenchmark(("onednn" + suffix).c_str(), bm_onednn, s, pass, threads);
        reference->Unit(benchmark::kMillisecond);
        if (threads > 1) reference->UseRealTime();
#endif
        for (const auto& k : ink::kernels::conv2d_kernels()) {
          if (k.name == "naive") continue;  // minutes per row at these sizes; tests use it
          auto* row = benchmark::RegisterBenchmark((k.name + suffix).c_str(), bm_kernel, s, pass, k,
                                                   threads);
          row->Unit(benchmark::kMillisecond);
          if (threads > 1) row->UseRealTime();
        }
      }
    }
  }
}

// The U-Net's upsampling as ops, forward and backward: conv2d(upsample_nearest2d(x, 2), w, b)
// against upsample_conv2d(x, w, b) (four 2x2 phase convolutions at x's resolution). GFLOP is
// the composition's arithmetic (the 3x3 convolution on the upsampled image, forward + dX + dW),
// so the two rows' rates compare their times directly.
void bm_upsample_conv(benchmark::State& state, bool fused, int64_t C, int64_t H, int64_t O,
                      int threads) {
  ink::set_num_threads(threads);
  const int64_t B = 64;
  ink::Generator gen(7);
  const ink::Tensor x = ink::uniform({B, C, H, H}, -1.0f, 1.0f, &gen).set_requires_grad(true);
  const ink::Tensor w = ink::uniform({O, C, 3, 3}, -0.1f, 0.1f, &gen).set_requires_grad(true);
  const ink::Tensor b = ink::uniform({O}, -0.1f, 0.1f, &gen).set_requires_grad(true);
  const ink::Tensor dy = ink::uniform({B, O, 2 * H, 2 * H}, -1.0f, 1.0f, &gen);
  const auto call = [&] {
    const ink::Tensor y = fused ? ink::upsample_conv2d(x, w, b)
                                : ink::conv2d(ink::upsample_nearest2d(x, 2), w, b, 1, 1);
    y.backward(dy);
  };
  call();
  const double flops = 3.0 * 2.0 * B * O * (2 * H) * (2 * H) * C * 9;
  ink::bench::timed_loop(state, flops, threads, call);
}

void register_upsample_conv() {
  struct Case {
    const char* name;
    int64_t C, H, O;
  };
  // up.1 of the small U-Net (64 channels at 14x14 -> 32 at 28x28) and up.2 (64 at 7x7 -> 64).
  for (const Case& c : {Case{"up.c64.14", 64, 14, 32}, Case{"up.c64.7", 64, 7, 64}}) {
    for (int threads : {1, 2}) {
      for (bool fused : {false, true}) {
        const std::string name = std::string(fused ? "upsample_conv2d/" : "upsample+conv2d/") +
                                 c.name + "/fwd+bwd/threads:" + std::to_string(threads);
        auto* row = benchmark::RegisterBenchmark(name.c_str(), bm_upsample_conv, fused, c.C, c.H,
                                                 c.O, threads);
        row->Unit(benchmark::kMillisecond);
        if (threads > 1) row->UseRealTime();
      }
    }
  }
}

}  // namespace

int main(int argc, char** argv) {
  register_all();
  register_upsample_conv();
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::AddCustomContext("sgemm_isa", ink::kernels::sgemm_isa());
#ifdef INK_HAVE_ONEDNN
  const dnnl_version_t* v = dnnl_version();
  benchmark::AddCustomContext("onednn", std::to_string(v->major) + "." + std::to_string(v->minor) +
                                            "." + std::to_string(v->patch));
#endif
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
