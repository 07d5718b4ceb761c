// yolov9k::box_iou: pairwise IoU of two sets of xyxy boxes (schema: box_iou.cpp; kernels:
// cpu/box_iou_kernel.cpp, cuda/box_iou_kernel.cu registered by cuda/box_iou_register.cpp;
// Python home: yolov9k/ops/box_iou.py).
#pragma once
#include <ATen/core/Tensor.h>

namespace yolov9k {

// CUDA kernel body: IoU of contiguous (N, 4) and (M, 4) boxes of one float dtype, same device.
at::Tensor box_iou_cuda_impl(const at::Tensor& a, const at::Tensor& b);

}  // namespace yolov9k
