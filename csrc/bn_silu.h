// yolov9k::bn_silu_train and yolov9k::bn_silu_train_backward (schemas and argument checks:
// bn_silu.cpp; kernel: cpu/bn_silu_kernel.cpp; Python home: yolov9k/ops/bn_silu.py).
#pragma once
#include <ATen/core/Tensor.h>

namespace yolov9k {

// Argument checks (devices are checked by the kernel). Errors raise ValueError / TypeError in
// Python, as nn.BatchNorm2d does for the same mistakes.
void check_bn_silu_args(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias);
// The forward's checks plus the shapes and dtypes of grad_y and the statistics.
void check_bn_silu_backward_args(const at::Tensor& grad_y, const at::Tensor& x, const at::Tensor& weight,
                                 const at::Tensor& bias, const at::Tensor& mean, const at::Tensor& invstd);

}  // namespace yolov9k
