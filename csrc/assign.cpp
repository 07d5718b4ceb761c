// Schema of yolov9k::assign: task-aligned label assignment (kernel: cpu/assign_kernel.cpp).
//
// Same arguments and results as yolov9k.ops.assign_reference (official YOLOv9 semantics, our tie
// rule): pd_scores (B, A, C) float, pd_bboxes (B, A, 4) xyxy px (float32/16/bf16), anc_points (A, 2)
// px, gt_labels (B, M, 1), gt_bboxes (B, M, 4) xyxy px, mask_gt (B, M, 1). Returns target_labels
// (B, A) int64, target_bboxes (B, A, 4) float32, target_scores (B, A, C) float32, fg_mask (B, A)
// bool, target_gt_idx (B, A) int64. Nothing of size B*M*A is built.
#include <torch/library.h>

TORCH_LIBRARY_FRAGMENT(yolov9k, m) {
  m.def(
      "assign(Tensor pd_scores, Tensor pd_bboxes, Tensor anc_points, Tensor gt_labels, "
      "Tensor gt_bboxes, Tensor mask_gt, int topk=10, float alpha=0.5, float beta=6.0, "
      "float eps=1e-9) -> (Tensor, Tensor, Tensor, Tensor, Tensor)");
}
