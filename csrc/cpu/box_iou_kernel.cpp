// CPU kernel of yolov9k::box_iou: IoU matrix (N, M) of xyxy boxes (N, 4) and (M, 4).
// Computed in float32 (or float64 for float64 input) exactly as the PyTorch reference
// yolov9k.ops.box_iou.box_iou: inter / (area1 + area2 - inter), 0 where the union is 0.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include "common/checks.h"

namespace yolov9k {
namespace {

template <typename scalar_t>
void box_iou_loop(const scalar_t* a, const scalar_t* b, scalar_t* out, int64_t n, int64_t m) {
  at::parallel_for(0, n, 16, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      const scalar_t ax1 = a[4 * i], ay1 = a[4 * i + 1], ax2 = a[4 * i + 2], ay2 = a[4 * i + 3];
      const scalar_t area_a = (ax2 - ax1) * (ay2 - ay1);
      scalar_t* row = out + i * m;
      for (int64_t j = 0; j < m; ++j) {
        const scalar_t* q = b + 4 * j;
        const scalar_t w = std::max<scalar_t>(std::min(ax2, q[2]) - std::max(ax1, q[0]), 0);
        const scalar_t h = std::max<scalar_t>(std::min(ay2, q[3]) - std::max(ay1, q[1]), 0);
        const scalar_t inter = w * h;
        const scalar_t uni = area_a + (q[2] - q[0]) * (q[3] - q[1]) - inter;
        row[j] = uni > 0 ? inter / uni : scalar_t(0);
      }
    }
  });
}

at::Tensor box_iou_cpu(const at::Tensor& boxes1, const at::Tensor& boxes2) {
  check_boxes(boxes1, "boxes1");
  check_boxes(boxes2, "boxes2");
  TORCH_CHECK(boxes1.device().is_cpu() && boxes2.device().is_cpu(),
              "yolov9k::box_iou (CPU kernel): expected CPU tensors");
  const auto compute = boxes1.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  auto a = boxes1.to(compute).contiguous();
  auto b = boxes2.to(compute).contiguous();
  auto out = at::empty({a.size(0), b.size(0)}, a.options());
  if (out.numel() == 0) return out.to(boxes1.scalar_type());
  AT_DISPATCH_FLOATING_TYPES(compute, "box_iou_cpu", [&] {
    box_iou_loop<scalar_t>(a.data_ptr<scalar_t>(), b.data_ptr<scalar_t>(),
                           out.data_ptr<scalar_t>(), a.size(0), b.size(0));
  });
  return out.to(boxes1.scalar_type());
}

}  // namespace

TORCH_LIBRARY_IMPL(yolov9k, CPU, m) { m.impl("box_iou", &box_iou_cpu); }

}  // namespace yolov9k
