// Schema of yolov9k::hsv_jitter_: the HSV colour jitter of the training augmentation, in place
// (kernel: cpu/hsv_jitter_kernel.cpp; reference: yolov9k.ops.hsv_jitter_reference).
//
// img: contiguous uint8 (..., 3) RGB (blue_index 2) or BGR (blue_index 0), changed in place; tables:
// contiguous uint8 (3, 256), one table per HSV channel (OpenCV's 8-bit HSV: hue in [0, 180)).
// Per pixel: RGB -> HSV as OpenCV's cvtColor, each channel through its table, HSV -> RGB as OpenCV's
// vector code computes it.
#include <torch/library.h>

TORCH_LIBRARY_FRAGMENT(yolov9k, m) {
  m.def("hsv_jitter_(Tensor(a!) img, Tensor tables, int blue_index) -> ()");
}
