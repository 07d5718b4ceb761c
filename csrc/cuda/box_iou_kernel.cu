// CUDA kernel of yolov9k::box_iou (light headers: no torch/extension.h, see docs/building.md).
#include <ATen/core/Tensor.h>
#include <ATen/Dispatch.h>
#include <ATen/ops/empty.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

namespace yolov9k {
namespace {

// Round-to-nearest arithmetic that nvcc may not contract into FMAs: the union
// area_a + area_b - inter would otherwise become an FFMA (one rounding fewer than the CPU kernel and
// the PyTorch reference), and the IoU would differ from them in the last bit.
__device__ __forceinline__ float add_rn(float a, float b) { return __fadd_rn(a, b); }
__device__ __forceinline__ float sub_rn(float a, float b) { return __fsub_rn(a, b); }
__device__ __forceinline__ float mul_rn(float a, float b) { return __fmul_rn(a, b); }
__device__ __forceinline__ float div_rn(float a, float b) { return __fdiv_rn(a, b); }
__device__ __forceinline__ double add_rn(double a, double b) { return __dadd_rn(a, b); }
__device__ __forceinline__ double sub_rn(double a, double b) { return __dsub_rn(a, b); }
__device__ __forceinline__ double mul_rn(double a, double b) { return __dmul_rn(a, b); }
__device__ __forceinline__ double div_rn(double a, double b) { return __ddiv_rn(a, b); }

// std::min / std::max as the CPU kernel calls them (NaN handling included; fminf / fmaxf differ).
template <typename T>
__device__ __forceinline__ T std_min(T a, T b) { return b < a ? b : a; }
template <typename T>
__device__ __forceinline__ T std_max(T a, T b) { return a < b ? b : a; }

// The CPU kernel's operation order (csrc/cpu/box_iou_kernel.cpp), each step rounded: bit-identical.
template <typename scalar_t>
__global__ void box_iou_kernel(const scalar_t* __restrict__ a, const scalar_t* __restrict__ b,
                               scalar_t* __restrict__ out, int64_t n, int64_t m) {
  const int64_t idx = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (idx >= n * m) return;
  const int64_t i = idx / m, j = idx % m;
  const scalar_t* p = a + 4 * i;
  const scalar_t* q = b + 4 * j;
  const scalar_t w = std_max(sub_rn(std_min(p[2], q[2]), std_max(p[0], q[0])), scalar_t(0));
  const scalar_t h = std_max(sub_rn(std_min(p[3], q[3]), std_max(p[1], q[1])), scalar_t(0));
  const scalar_t inter = mul_rn(w, h);
  const scalar_t area_a = mul_rn(sub_rn(p[2], p[0]), sub_rn(p[3], p[1]));
  const scalar_t area_b = mul_rn(sub_rn(q[2], q[0]), sub_rn(q[3], q[1]));
  const scalar_t uni = sub_rn(add_rn(area_a, area_b), inter);
  out[idx] = uni > 0 ? div_rn(inter, uni) : scalar_t(0);
}

}  // namespace

// a, b: contiguous (N, 4) / (M, 4) float32 or float64 on one CUDA device.
at::Tensor box_iou_cuda_impl(const at::Tensor& a, const at::Tensor& b) {
  c10::cuda::CUDAGuard guard(a.device());
  auto out = at::empty({a.size(0), b.size(0)}, a.options());
  const int64_t total = out.numel();
  if (total == 0) return out;
  const int threads = 256;
  const int64_t blocks = (total + threads - 1) / threads;
  auto stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES(a.scalar_type(), "box_iou_cuda", [&] {
    box_iou_kernel<scalar_t><<<blocks, threads, 0, stream>>>(
        a.data_ptr<scalar_t>(), b.data_ptr<scalar_t>(), out.data_ptr<scalar_t>(), a.size(0),
        b.size(0));
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return out;
}

}  // namespace yolov9k
