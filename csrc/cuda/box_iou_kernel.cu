// CUDA kernel of yolov9k::box_iou (light headers: no torch/extension.h, see docs/building.md).
#include <ATen/core/Tensor.h>
#include <ATen/Dispatch.h>
#include <ATen/ops/empty.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

namespace yolov9k {
namespace {

template <typename scalar_t>
__global__ void box_iou_kernel(const scalar_t* __restrict__ a, const scalar_t* __restrict__ b,
                               scalar_t* __restrict__ out, int64_t n, int64_t m) {
  const int64_t idx = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (idx >= n * m) return;
  const int64_t i = idx / m, j = idx % m;
  const scalar_t* p = a + 4 * i;
  const scalar_t* q = b + 4 * j;
  const scalar_t w = max(min(p[2], q[2]) - max(p[0], q[0]), scalar_t(0));
  const scalar_t h = max(min(p[3], q[3]) - max(p[1], q[1]), scalar_t(0));
  const scalar_t inter = w * h;
  const scalar_t uni = (p[2] - p[0]) * (p[3] - p[1]) + (q[2] - q[0]) * (q[3] - q[1]) - inter;
  out[idx] = uni > 0 ? inter / uni : scalar_t(0);
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
