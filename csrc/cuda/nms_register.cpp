// CUDA registration of yolov9k::postprocess (argument checks here; kernels in nms_kernel.cu).
// yolov9k::batched_nms has no CUDA kernel: on CUDA tensors the dispatcher in yolov9k/ops/nms.py
// uses the PyTorch reference.
#include <ATen/ATen.h>
#include <torch/library.h>

#include <tuple>

namespace yolov9k {

void check_postprocess_args(const at::Tensor& pred, double conf, double iou, int64_t max_det, int64_t max_nms,
                            const c10::optional<at::Tensor>& class_mask);

std::tuple<at::Tensor, at::Tensor> postprocess_cuda_impl(const at::Tensor& pred, double conf_thres,
                                                         double iou_thres, int64_t max_det, int64_t max_nms,
                                                         bool multi_label, bool agnostic, const bool* class_mask);

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

}  // namespace

TORCH_LIBRARY_IMPL(yolov9k, CUDA, m) { m.impl("postprocess", &postprocess_cuda); }

}  // namespace yolov9k
