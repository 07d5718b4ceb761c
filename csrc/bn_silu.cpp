// Schemas of the fused train-mode BatchNorm2d + SiLU ops (kernel: cpu/bn_silu_kernel.cpp).
//
// bn_silu_train: x (N, C, H, W) float32/float64, weight and bias (C,) of x's dtype. With the
//   per-channel batch mean and invstd = 1 / sqrt(biased variance + eps), returns
//   y = silu((x - mean) * invstd * weight + bias) (N, C, H, W, contiguous), mean (C,) and invstd (C,)
//   in x's dtype. Neither the normalised value nor the BatchNorm output is stored: the backward
//   recomputes them from x. The running statistics are the caller's (yolov9k/ops/bn_silu.py).
// bn_silu_train_backward: (grad_x, grad_weight, grad_bias) of y given grad_y, the forward's inputs
//   and its mean / invstd (batch statistics, so grad_x includes their dependence on x).
#include <ATen/core/Tensor.h>
#include <torch/library.h>

#include "bn_silu.h"
#include "common/checks.h"

namespace yolov9k {

void check_bn_silu_args(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias) {
  TORCH_CHECK_VALUE(x.dim() == 4, "yolov9k::bn_silu_train: x must have shape (N, C, H, W), got ", x.sizes());
  TORCH_CHECK_TYPE(x.scalar_type() == at::kFloat || x.scalar_type() == at::kDouble,
                   "yolov9k::bn_silu_train: x must be float32 or float64, got ", x.scalar_type());
  const int64_t channels = x.size(1);
  for (const auto& [t, name] : {std::pair<const at::Tensor&, const char*>{weight, "weight"}, {bias, "bias"}}) {
    TORCH_CHECK_VALUE(t.dim() == 1 && t.size(0) == channels, "yolov9k::bn_silu_train: ", name,
                      " must have shape (C,) = (", channels, ",), got ", t.sizes());
    TORCH_CHECK_TYPE(t.scalar_type() == x.scalar_type(), "yolov9k::bn_silu_train: ", name, " is ",
                     t.scalar_type(), ", x is ", x.scalar_type());
  }
  // As F.batch_norm: exactly one value per channel is an error, an empty batch is not.
  TORCH_CHECK_VALUE(x.size(0) * x.size(2) * x.size(3) != 1,
                    "Expected more than 1 value per channel when training, got input size ", x.sizes());
}

void check_bn_silu_backward_args(const at::Tensor& grad_y, const at::Tensor& x, const at::Tensor& weight,
                                 const at::Tensor& bias, const at::Tensor& mean, const at::Tensor& invstd) {
  check_bn_silu_args(x, weight, bias);
  TORCH_CHECK_VALUE(grad_y.sizes() == x.sizes(), "yolov9k::bn_silu_train_backward: grad_y must have x's shape ",
                    x.sizes(), ", got ", grad_y.sizes());
  TORCH_CHECK_TYPE(grad_y.scalar_type() == x.scalar_type(), "yolov9k::bn_silu_train_backward: grad_y is ",
                   grad_y.scalar_type(), ", x is ", x.scalar_type());
  for (const auto& [t, name] : {std::pair<const at::Tensor&, const char*>{mean, "mean"}, {invstd, "invstd"}}) {
    TORCH_CHECK_VALUE(t.dim() == 1 && t.size(0) == x.size(1), "yolov9k::bn_silu_train_backward: ", name,
                      " must have shape (C,) = (", x.size(1), ",), got ", t.sizes());
    TORCH_CHECK_TYPE(t.scalar_type() == x.scalar_type(), "yolov9k::bn_silu_train_backward: ", name, " is ",
                     t.scalar_type(), ", x is ", x.scalar_type());
  }
}

}  // namespace yolov9k

TORCH_LIBRARY_FRAGMENT(yolov9k, m) {
  m.def("bn_silu_train(Tensor x, Tensor weight, Tensor bias, float eps) -> (Tensor y, Tensor mean, Tensor invstd)");
  m.def(
      "bn_silu_train_backward(Tensor grad_y, Tensor x, Tensor weight, Tensor bias, Tensor mean, Tensor invstd)"
      " -> (Tensor grad_x, Tensor grad_weight, Tensor grad_bias)");
}
