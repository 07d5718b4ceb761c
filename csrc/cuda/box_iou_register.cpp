// CUDA registration of yolov9k::box_iou (validation here; the kernel lives in box_iou_kernel.cu).
#include <ATen/ATen.h>
#include <torch/library.h>

#include "box_iou.h"
#include "common/checks.h"

namespace yolov9k {

namespace {

at::Tensor box_iou_cuda(const at::Tensor& boxes1, const at::Tensor& boxes2) {
  check_boxes(boxes1, "boxes1");
  check_boxes(boxes2, "boxes2");
  TORCH_CHECK(boxes1.is_cuda() && boxes2.is_cuda() && boxes1.device() == boxes2.device(),
              "yolov9k::box_iou (CUDA kernel): expected both tensors on the same CUDA device");
  const auto compute = boxes1.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  auto out = box_iou_cuda_impl(boxes1.to(compute).contiguous(), boxes2.to(compute).contiguous());
  return out.to(boxes1.scalar_type());
}

}  // namespace

TORCH_LIBRARY_IMPL(yolov9k, CUDA, m) { m.impl("box_iou", &box_iou_cuda); }

}  // namespace yolov9k
