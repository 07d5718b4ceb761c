// Schemas of the NMS ops (kernels: cpu/nms_kernel.cpp, cuda/nms_kernel.cu + cuda/nms_register.cpp).
//
// batched_nms: kept indices (int64, score descending, ties by lower index) of greedy per-class NMS;
//   max_keep < 0 means no limit.
// postprocess: the official YOLOv9 non_max_suppression for a whole batch, with fixed-size outputs
//   (dets (B, max_det, 6) float32 [x1, y1, x2, y2, conf, cls] zero-padded, counts (B) int64).
//   class_mask: optional bool (nc,) on pred's device, True for the classes to keep.
#include <torch/library.h>

TORCH_LIBRARY_FRAGMENT(yolov9k, m) {
  m.def(
      "batched_nms(Tensor boxes, Tensor scores, Tensor idxs, float iou_threshold, int max_keep=-1)"
      " -> Tensor");
  m.def(
      "postprocess(Tensor pred, float conf_thres, float iou_thres, int max_det, int max_nms, "
      "bool multi_label, bool agnostic, Tensor? class_mask=None) -> (Tensor, Tensor)");
}
