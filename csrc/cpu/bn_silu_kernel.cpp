// CPU kernels of yolov9k::bn_silu_train and yolov9k::bn_silu_train_backward (schemas: bn_silu.cpp).
//
// Layout: x is (N, C, H, W), NCHW-contiguous (other layouts are copied first), so plane p = n * C + c
// is HW contiguous elements at x + p * HW; a channel is N planes C * HW apart.
//
// Forward: (1) per plane, sum(x) gives the plane mean m, then sum(x - m) and sum((x - m)^2) (the
// corrected two-pass scheme, exact enough for large means; the plane is still in cache), planes
// are combined per channel with Chan et al.'s formula; (2) y = silu((x - mean) * invstd * w + b).
// Backward: z and g = grad_y * silu'(z) are recomputed from x in both passes: (1) sum(g) and
// sum(g * xhat) per plane, (2) grad_x = w * invstd * (g - mean(g) - xhat * mean(g * xhat)).
// Sums run in the element type over blocks of kBlock vectors, blocks are added in double; exp is
// at::vec's exp_u20 (float32: a polynomial, ~1e-6 relative; float64: Sleef).
//
// Threads (run_passes): with at least kChannelsPerThread channels per thread, each task takes whole
// channels and writes a channel right after reducing it (its second read comes from cache); with
// fewer channels (C = 1 included) the reduction and the write phase each run in parallel over
// planes. Per-plane partial sums are combined per channel in a fixed order either way, so results
// do not depend on the number of threads.
//
// Vectorisation: at::vec::Vectorized. The extension is compiled without -mavx2, where at::vec
// falls back to plain arrays and scalar exp. So with GCC on x86-64 the vector code below is
// compiled for AVX2 + FMA (ATen's AVX2 Vectorized, #pragma GCC target; only at::vec's own headers
// and this file's kernels are in that region) and runs only when ATen itself runs AVX2 or AVX-512
// kernels (torch.backends.cpu.get_cpu_capability(), which ATEN_CPU_CAPABILITY can lower);
// otherwise the same results come from ATen ops (native_batch_norm, silu). Other compilers and
// architectures get the at::vec their build flags select, always usable.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/Version.h>
#include <torch/library.h>

// Everything at::vec includes besides itself, so that none of it is compiled for AVX2 below.
#include <ATen/NumericUtils.h>
#include <ATen/native/Math.h>
#include <ATen/native/cpu/zmath.h>
#include <c10/util/BFloat16-math.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>
#include <c10/util/Load.h>
#include <c10/util/TypeCast.h>
#include <c10/util/complex.h>
#include <c10/util/copysign.h>
#include <c10/util/irange.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <functional>
#include <string>
#include <tuple>
#include <vector>

#include "common/checks.h"

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && !defined(__AVX2__)
// The region's ISA macros are not set by the pragma in C++; sleef.h (ATen's vector exp) needs them
// to declare its 256-bit functions. They are true inside the region and removed after it.
#define YOLOV9K_BN_SILU_PRAGMA 1
#pragma GCC push_options
#pragma GCC target("avx,avx2,fma,f16c")
#define __AVX__ 1
#define __AVX2__ 1
#define __FMA__ 1
#define __F16C__ 1
#endif
#if defined(__x86_64__) && defined(__AVX2__) && defined(__FMA__)
#define YOLOV9K_BN_SILU_AVX2 1  // the vector kernels need AVX2 + FMA at run time
#define CPU_CAPABILITY AVX2
#define CPU_CAPABILITY_AVX2
#endif
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wpsabi"  // at::vec's bf16 lambdas returning __m256
#include <ATen/cpu/vec/functional.h>
#include <ATen/cpu/vec/vec.h>
#pragma GCC diagnostic pop

namespace yolov9k {
namespace {

template <typename T>
using Vec = at::vec::Vectorized<T>;

constexpr int64_t kBlock = 32;  // vectors summed in the element type before a block goes to double
constexpr int64_t kChannelsPerThread = 4;  // fewer channels than this per thread: plane-parallel

template <typename T>
inline T lane_sum(const Vec<T>& v) {
  return at::vec::vec_reduce_all<T>([](const Vec<T>& a, const Vec<T>& b) { return a + b; }, v);
}

// `count` (1..Vec::size()) elements at p; lanes past count hold `fill`.
template <typename T>
inline Vec<T> load(const T* p, int64_t count, T fill) {
  if (count == Vec<T>::size()) return Vec<T>::loadu(p);
  return Vec<T>::set(Vec<T>(fill), Vec<T>::loadu(p, count), count);
}

// Sums of K per-element terms over [0, n): terms(i, count) gives the terms of the `count` elements
// at i as K vectors whose lanes past count are 0. Blocks of kBlock vectors are summed in T, then
// added in double.
template <typename T, size_t K, typename Terms>
std::array<double, K> block_sums(int64_t n, const Terms& terms) {
  constexpr int64_t W = Vec<T>::size();
  std::array<double, K> total{};
  for (int64_t start = 0; start < n; start += kBlock * W) {
    const int64_t stop = std::min(n, start + kBlock * W);
    std::array<Vec<T>, K> acc;
    acc.fill(Vec<T>(T(0)));
    for (int64_t i = start; i < stop; i += W) {
      const std::array<Vec<T>, K> t = terms(i, std::min(W, stop - i));
      for (size_t k = 0; k < K; ++k) acc[k] = acc[k] + t[k];
    }
    for (size_t k = 0; k < K; ++k) total[k] += static_cast<double>(lane_sum(acc[k]));
  }
  return total;
}

// silu(z) = z * sigmoid(z), and g = dy * silu'(z) = dy * s * (1 + z * (1 - s)) with s = sigmoid(z).
template <typename T>
inline Vec<T> silu(const Vec<T>& z) {
  return z / (Vec<T>(T(1)) + z.neg().exp_u20());
}

template <typename T>
inline Vec<T> silu_grad(const Vec<T>& z, const Vec<T>& dy) {
  const Vec<T> one(T(1));
  const Vec<T> s = one / (one + z.neg().exp_u20());
  return dy * s * (one + z * (one - s));
}

// Mean and sum of squared deviations of one plane.
struct Moments {
  double mean, m2;
};

template <typename T>
Moments plane_moments(const T* x, int64_t n) {
  const auto [sum] = block_sums<T, 1>(n, [&](int64_t i, int64_t cnt) { return std::array{load(x + i, cnt, T(0))}; });
  const T m = static_cast<T>(sum / static_cast<double>(n));
  const Vec<T> mv(m);
  const auto [s1, s2] = block_sums<T, 2>(n, [&](int64_t i, int64_t cnt) {
    const Vec<T> d = load(x + i, cnt, m) - mv;
    return std::array{d, d * d};
  });
  return {m + s1 / static_cast<double>(n), s2 - s1 * s1 / static_cast<double>(n)};
}

// Per-channel parameters of the elementwise passes.
template <typename T>
struct ChannelParams {
  T mean, invstd, weight, bias;
};

// y = silu((x - mean) * (invstd * weight) + bias) over one plane.
template <typename T>
void plane_forward(const T* x, T* y, int64_t n, const ChannelParams<T>& p) {
  constexpr int64_t W = Vec<T>::size();
  const Vec<T> mean(p.mean), scale(p.invstd * p.weight), bias(p.bias);
  for (int64_t i = 0; i < n; i += W) {
    const int64_t cnt = std::min(W, n - i);
    silu(at::vec::fmadd(load(x + i, cnt, p.mean) - mean, scale, bias)).store(y + i, cnt);
  }
}

// xhat and g = grad_y * silu'(z) of `cnt` elements at i (lanes past cnt: xhat = 0, g = 0).
template <typename T>
inline std::array<Vec<T>, 2> recompute(const T* x, const T* dy, int64_t i, int64_t cnt, const ChannelParams<T>& p) {
  const Vec<T> xhat = (load(x + i, cnt, p.mean) - Vec<T>(p.mean)) * Vec<T>(p.invstd);
  const Vec<T> z = at::vec::fmadd(xhat, Vec<T>(p.weight), Vec<T>(p.bias));
  return {xhat, silu_grad(z, load(dy + i, cnt, T(0)))};
}

// grad_x = (invstd * weight) * (g - c1 - xhat * c2) over one plane.
template <typename T>
void plane_backward(const T* x, const T* dy, T* dx, int64_t n, const ChannelParams<T>& p, T c1, T c2) {
  constexpr int64_t W = Vec<T>::size();
  const Vec<T> k(p.invstd * p.weight), c1v(c1), c2v(c2);
  for (int64_t i = 0; i < n; i += W) {
    const int64_t cnt = std::min(W, n - i);
    const auto [xhat, g] = recompute(x, dy, i, cnt, p);
    (k * (g - c1v - xhat * c2v)).store(dx + i, cnt);
  }
}

// Runs reduce(p) on every plane p = n * C + c, then finish(c) on every channel, then write(p) on
// every plane; finish(c) runs after the reductions of channel c and before its writes.
// With enough channels for the threads each task takes whole channels and writes a channel right
// after reducing it, so the second read of its planes hits the cache; otherwise (few channels) the
// three phases run one after the other, the plane phases in parallel over planes.
template <typename Reduce, typename Finish, typename Write>
void run_passes(int64_t N, int64_t C, int64_t HW, const Reduce& reduce, const Finish& finish, const Write& write) {
  if (C >= kChannelsPerThread * at::get_num_threads()) {
    const int64_t grain = std::max<int64_t>(1, at::internal::GRAIN_SIZE / std::max<int64_t>(N * HW, 1));
    at::parallel_for(0, C, grain, [&](int64_t begin, int64_t end) {
      for (int64_t c = begin; c < end; ++c) {
        for (int64_t n = 0; n < N; ++n) reduce(n * C + c);
        finish(c);
        for (int64_t n = 0; n < N; ++n) write(n * C + c);
      }
    });
    return;
  }
  const int64_t grain = std::max<int64_t>(1, at::internal::GRAIN_SIZE / std::max<int64_t>(HW, 1));
  at::parallel_for(0, N * C, grain, [&](int64_t begin, int64_t end) {
    for (int64_t p = begin; p < end; ++p) reduce(p);
  });
  for (int64_t c = 0; c < C; ++c) finish(c);
  at::parallel_for(0, N * C, grain, [&](int64_t begin, int64_t end) {
    for (int64_t p = begin; p < end; ++p) write(p);
  });
}

template <typename T>
void forward_typed(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias, double eps,
                   at::Tensor& y, at::Tensor& mean, at::Tensor& invstd) {
  const int64_t N = x.size(0), C = x.size(1), HW = x.size(2) * x.size(3);
  const T* xp = x.const_data_ptr<T>();
  const T* w = weight.const_data_ptr<T>();
  const T* b = bias.const_data_ptr<T>();
  T* yp = y.mutable_data_ptr<T>();
  T* mean_p = mean.mutable_data_ptr<T>();
  T* invstd_p = invstd.mutable_data_ptr<T>();
  std::vector<Moments> planes(N * C);
  std::vector<ChannelParams<T>> params(C);

  auto reduce = [&](int64_t p) { planes[p] = plane_moments(xp + p * HW, HW); };
  // Chan et al.: planes of equal size HW combine into the channel's mean and biased variance.
  auto finish = [&](int64_t c) {
    double mu = 0, m2 = 0;
    for (int64_t n = 0; n < N; ++n) mu += planes[n * C + c].mean;
    mu /= static_cast<double>(N);
    for (int64_t n = 0; n < N; ++n) {
      const Moments& pm = planes[n * C + c];
      m2 += pm.m2 + static_cast<double>(HW) * (pm.mean - mu) * (pm.mean - mu);
    }
    const double var = std::max(m2 / static_cast<double>(N * HW), 0.0);  // rounding; NaN stays NaN
    mean_p[c] = static_cast<T>(mu);
    invstd_p[c] = static_cast<T>(1.0 / std::sqrt(var + eps));
    params[c] = {mean_p[c], invstd_p[c], w[c], b[c]};
  };
  auto write = [&](int64_t p) { plane_forward(xp + p * HW, yp + p * HW, HW, params[p % C]); };
  run_passes(N, C, HW, reduce, finish, write);
}

template <typename T>
void backward_typed(const at::Tensor& grad_y, const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias,
                    const at::Tensor& mean, const at::Tensor& invstd, at::Tensor& grad_x, at::Tensor& grad_weight,
                    at::Tensor& grad_bias) {
  const int64_t N = x.size(0), C = x.size(1), HW = x.size(2) * x.size(3);
  const T* xp = x.const_data_ptr<T>();
  const T* dyp = grad_y.const_data_ptr<T>();
  T* dxp = grad_x.mutable_data_ptr<T>();
  T* gw = grad_weight.mutable_data_ptr<T>();
  T* gb = grad_bias.mutable_data_ptr<T>();
  std::vector<ChannelParams<T>> params(C);
  for (int64_t c = 0; c < C; ++c)
    params[c] = {mean.const_data_ptr<T>()[c], invstd.const_data_ptr<T>()[c], weight.const_data_ptr<T>()[c],
                 bias.const_data_ptr<T>()[c]};
  std::vector<std::array<double, 2>> planes(N * C);  // sum(g), sum(g * xhat) of each plane
  std::vector<std::array<T, 2>> coef(C);             // mean(g), mean(g * xhat) of each channel
  const double count = static_cast<double>(N * HW);

  auto reduce = [&](int64_t p) {
    const T* xq = xp + p * HW;
    const T* dyq = dyp + p * HW;
    const ChannelParams<T>& cp = params[p % C];
    planes[p] = block_sums<T, 2>(HW, [&](int64_t i, int64_t cnt) {
      const auto [xhat, g] = recompute(xq, dyq, i, cnt, cp);
      return std::array{g, g * xhat};
    });
  };
  auto finish = [&](int64_t c) {
    double sg = 0, sgx = 0;
    for (int64_t n = 0; n < N; ++n) {
      sg += planes[n * C + c][0];
      sgx += planes[n * C + c][1];
    }
    gb[c] = static_cast<T>(sg);
    gw[c] = static_cast<T>(sgx);
    coef[c] = {static_cast<T>(sg / count), static_cast<T>(sgx / count)};
  };
  auto write = [&](int64_t p) {
    const int64_t c = p % C;
    plane_backward(xp + p * HW, dyp + p * HW, dxp + p * HW, HW, params[c], coef[c][0], coef[c][1]);
  };
  run_passes(N, C, HW, reduce, finish, write);
}

// The vectorised kernels on contiguous tensors (outputs allocated by the caller).
void forward_vec(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias, double eps, at::Tensor& y,
                 at::Tensor& mean, at::Tensor& invstd) {
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "bn_silu_train", [&] {
    forward_typed<scalar_t>(x, weight, bias, eps, y, mean, invstd);
  });
}

void backward_vec(const at::Tensor& grad_y, const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias,
                  const at::Tensor& mean, const at::Tensor& invstd, at::Tensor& grad_x, at::Tensor& grad_weight,
                  at::Tensor& grad_bias) {
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "bn_silu_train_backward", [&] {
    backward_typed<scalar_t>(grad_y, x, weight, bias, mean, invstd, grad_x, grad_weight, grad_bias);
  });
}

}  // namespace
}  // namespace yolov9k

#ifdef YOLOV9K_BN_SILU_PRAGMA
#pragma GCC pop_options
#undef __AVX__
#undef __AVX2__
#undef __FMA__
#undef __F16C__
#endif

#include "bn_silu.h"

namespace yolov9k {

namespace {

using Result = std::tuple<at::Tensor, at::Tensor, at::Tensor>;

// Whether this CPU runs the vector kernels (see the top of the file).
bool vec_kernels_usable() {
#ifdef YOLOV9K_BN_SILU_AVX2
  static const bool usable = [] {
    const std::string cap = at::get_cpu_capability();
    return cap == "AVX2" || cap == "AVX512";
  }();
  return usable;
#else
  return true;
#endif
}

void check_cpu(std::initializer_list<const at::Tensor*> tensors, const char* op) {
  for (const at::Tensor* t : tensors)
    TORCH_CHECK(t->device().is_cpu(), op, " (CPU kernel): expected CPU tensors, got one on ", t->device());
}

// (x - mean) * invstd * weight + bias with per-channel (C,) vectors, for the ATen fallback.
at::Tensor bn_affine(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias, const at::Tensor& mean,
                     const at::Tensor& invstd) {
  auto per_channel = [](const at::Tensor& t) { return t.view({1, -1, 1, 1}); };
  return (x - per_channel(mean)) * per_channel(invstd) * per_channel(weight) + per_channel(bias);
}

Result bn_silu_train_cpu(const at::Tensor& x_in, const at::Tensor& weight_in, const at::Tensor& bias_in,
                         double eps) {
  check_bn_silu_args(x_in, weight_in, bias_in);
  check_cpu({&x_in, &weight_in, &bias_in}, "yolov9k::bn_silu_train");
  const at::Tensor x = x_in.contiguous(), weight = weight_in.contiguous(), bias = bias_in.contiguous();
  if (!vec_kernels_usable() || x.numel() == 0) {
    auto [out, mean, invstd] = at::native_batch_norm(x, weight, bias, {}, {}, /*training=*/true, 0.0, eps);
    return {at::silu_(out), mean, invstd};
  }
  at::Tensor y = at::empty_like(x, at::MemoryFormat::Contiguous);
  at::Tensor mean = at::empty({x.size(1)}, x.options());
  at::Tensor invstd = at::empty({x.size(1)}, x.options());
  forward_vec(x, weight, bias, eps, y, mean, invstd);
  return {y, mean, invstd};
}

Result bn_silu_train_backward_cpu(const at::Tensor& grad_y_in, const at::Tensor& x_in, const at::Tensor& weight_in,
                                  const at::Tensor& bias_in, const at::Tensor& mean_in, const at::Tensor& invstd_in) {
  check_bn_silu_backward_args(grad_y_in, x_in, weight_in, bias_in, mean_in, invstd_in);
  check_cpu({&grad_y_in, &x_in, &weight_in, &bias_in, &mean_in, &invstd_in}, "yolov9k::bn_silu_train_backward");
  const at::Tensor grad_y = grad_y_in.contiguous(), x = x_in.contiguous();
  const at::Tensor weight = weight_in.contiguous(), bias = bias_in.contiguous();
  const at::Tensor mean = mean_in.contiguous(), invstd = invstd_in.contiguous();
  if (!vec_kernels_usable() || x.numel() == 0) {
    const at::Tensor g = at::silu_backward(grad_y, bn_affine(x, weight, bias, mean, invstd));
    return at::native_batch_norm_backward(g, x, weight, {}, {}, mean, invstd, /*train=*/true, 0.0,
                                          {true, true, true});
  }
  at::Tensor grad_x = at::empty_like(x, at::MemoryFormat::Contiguous);
  at::Tensor grad_weight = at::empty_like(weight);
  at::Tensor grad_bias = at::empty_like(bias);
  backward_vec(grad_y, x, weight, bias, mean, invstd, grad_x, grad_weight, grad_bias);
  return {grad_x, grad_weight, grad_bias};
}

}  // namespace

TORCH_LIBRARY_IMPL(yolov9k, CPU, m) {
  m.impl("bn_silu_train", &bn_silu_train_cpu);
  m.impl("bn_silu_train_backward", &bn_silu_train_backward_cpu);
}

}  // namespace yolov9k
