// Schema of yolov9k::box_iou: pairwise IoU of two sets of xyxy boxes.
#include <torch/library.h>

#include "box_iou.h"

TORCH_LIBRARY_FRAGMENT(yolov9k, m) {
  m.def("box_iou(Tensor boxes1, Tensor boxes2) -> Tensor");
}
