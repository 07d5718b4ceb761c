// yolov9k::batched_nms and yolov9k::postprocess (schemas and argument checks: nms.cpp; kernels:
// cpu/nms_kernel.cpp, cuda/nms_kernel.cu registered by cuda/nms_register.cpp; Python home:
// yolov9k/ops/nms.py).
#pragma once
#include <ATen/core/Tensor.h>
#include <c10/util/Optional.h>

#include <tuple>

namespace yolov9k {

// Argument checks shared by the CPU and CUDA kernels (devices are checked by each).
void check_postprocess_args(const at::Tensor& pred, double conf, double iou, int64_t max_det, int64_t max_nms,
                            const c10::optional<at::Tensor>& class_mask);
void check_batched_nms_args(const at::Tensor& boxes, const at::Tensor& scores, const at::Tensor& idxs,
                            double iou_threshold);

// CUDA kernel bodies (float32 contiguous inputs; class_mask: nc bools on the device or nullptr).
at::Tensor batched_nms_cuda_impl(const at::Tensor& boxes, const at::Tensor& scores, const at::Tensor& groups,
                                 double iou_threshold, int64_t max_keep);
std::tuple<at::Tensor, at::Tensor> postprocess_cuda_impl(const at::Tensor& pred, double conf_thres,
                                                         double iou_thres, int64_t max_det, int64_t max_nms,
                                                         bool multi_label, bool agnostic, const bool* class_mask);

}  // namespace yolov9k
