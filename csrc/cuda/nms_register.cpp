// CUDA registration of yolov9k::postprocess and yolov9k::batched_nms (argument checks here;
// kernels in nms_kernel.cu).
#include <ATen/ATen.h>
#include <torch/library.h>

#include <tuple>

#include "nms.h"

namespace yolov9k {

namespace {

std::tuple<at::Tensor, at::Tensor> postprocess_cuda(const at::Tensor& pred, double conf_thres, double iou_thres,
                                                    int64_t max_det, int64_t max_nms, bool multi_label,
                                                    bool agnostic, const c10::optional<at::Tensor>& class_mask) {
  check_postprocess_args(pred, conf_thres, iou_thres, max_det, max_nms, class_mask);
  TORCH_CHECK(pred.is_cuda(), "yolov9k::postprocess (CUDA kernel): expected a CUDA tensor");
  const auto x = pred.to(at::kFloat).contiguous();
  at::Tensor mask;
  if (class_mask.has_value()) mask = class_mask->contiguous();
  return postprocess_cuda_impl(x, conf_thres, iou_thres, max_det, max_nms, multi_label, agnostic,
                               mask.defined() ? mask.data_ptr<bool>() : nullptr);
}

at::Tensor batched_nms_cuda(const at::Tensor& boxes, const at::Tensor& scores, const at::Tensor& idxs,
                            double iou_threshold, int64_t max_keep) {
  check_batched_nms_args(boxes, scores, idxs, iou_threshold);
  TORCH_CHECK(boxes.is_cuda() && scores.device() == boxes.device() && idxs.device() == boxes.device(),
              "yolov9k::batched_nms (CUDA kernel): expected tensors on one CUDA device, got ", boxes.device(),
              ", ", scores.device(), ", ", idxs.device());
  return batched_nms_cuda_impl(boxes.to(at::kFloat).contiguous(), scores.to(at::kFloat).contiguous(),
                               idxs.to(at::kLong).contiguous(), iou_threshold, max_keep);
}

}  // namespace

TORCH_LIBRARY_IMPL(yolov9k, CUDA, m) {
  m.impl("postprocess", &postprocess_cuda);
  m.impl("batched_nms", &batched_nms_cuda);
}

}  // namespace yolov9k
