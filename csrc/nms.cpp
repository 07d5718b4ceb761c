// Schemas of the NMS ops (kernels: cpu/nms_kernel.cpp, cuda/nms_kernel.cu + cuda/nms_register.cpp).
//
// batched_nms: kept indices (int64, score descending, ties by lower index) of greedy per-class NMS;
//   max_keep < 0 means no limit.
// postprocess: the official YOLOv9 non_max_suppression for a whole batch, with fixed-size outputs
//   (dets (B, max_det, 6) float32 [x1, y1, x2, y2, conf, cls] zero-padded, counts (B) int64).
//   class_mask: optional bool (nc,) on pred's device, True for the classes to keep.
#include <ATen/core/Tensor.h>
#include <torch/library.h>

#include <cmath>

#include "common/checks.h"
#include "nms.h"

namespace yolov9k {

void check_postprocess_args(const at::Tensor& pred, double conf, double iou, int64_t max_det, int64_t max_nms,
                            const c10::optional<at::Tensor>& class_mask) {
  TORCH_CHECK(pred.dim() == 3 && pred.size(1) >= 5,
              "yolov9k::postprocess: pred must have shape (B, 4 + nc, A) with nc >= 1, got ", pred.sizes());
  check_floating(pred, "pred");
  TORCH_CHECK(conf >= 0 && conf <= 1, "yolov9k::postprocess: conf_thres must be in [0, 1], got ", conf);
  TORCH_CHECK(iou >= 0 && iou <= 1, "yolov9k::postprocess: iou_thres must be in [0, 1], got ", iou);
  TORCH_CHECK(max_det >= 1 && max_nms >= 1, "yolov9k::postprocess: max_det and max_nms must be >= 1, got ",
              max_det, " and ", max_nms);
  if (class_mask.has_value()) {
    const at::Tensor& m = *class_mask;
    TORCH_CHECK(m.scalar_type() == at::kBool && m.dim() == 1 && m.size(0) == pred.size(1) - 4,
                "yolov9k::postprocess: class_mask must be a bool tensor of shape (nc,) = (", pred.size(1) - 4,
                ",), got ", m.scalar_type(), " ", m.sizes());
    TORCH_CHECK(m.device() == pred.device(), "yolov9k::postprocess: class_mask on ", m.device(),
                ", pred on ", pred.device());
  }
}

void check_batched_nms_args(const at::Tensor& boxes, const at::Tensor& scores, const at::Tensor& idxs,
                            double iou_threshold) {
  check_boxes(boxes, "boxes");
  check_floating(scores, "scores");
  const int64_t n = boxes.size(0);
  TORCH_CHECK(scores.dim() == 1 && scores.size(0) == n, "yolov9k::batched_nms: scores must be (N,) with N = ",
              n, ", got ", scores.sizes());
  TORCH_CHECK(idxs.dim() == 1 && idxs.size(0) == n, "yolov9k::batched_nms: idxs must be (N,) with N = ", n,
              ", got ", idxs.sizes());
  TORCH_CHECK(at::isIntegralType(idxs.scalar_type(), /*includeBool=*/false),
              "yolov9k::batched_nms: idxs must be an integer tensor, got ", idxs.scalar_type());
  TORCH_CHECK(!std::isnan(iou_threshold), "yolov9k::batched_nms: iou_threshold is NaN");
}

}  // namespace yolov9k

TORCH_LIBRARY_FRAGMENT(yolov9k, m) {
  m.def(
      "batched_nms(Tensor boxes, Tensor scores, Tensor idxs, float iou_threshold, int max_keep=-1)"
      " -> Tensor");
  m.def(
      "postprocess(Tensor pred, float conf_thres, float iou_thres, int max_det, int max_nms, "
      "bool multi_label, bool agnostic, Tensor? class_mask=None) -> (Tensor, Tensor)");
}
