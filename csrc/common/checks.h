// Input validation shared by the native kernels: clear errors instead of crashes.
#pragma once
#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

namespace yolov9k {

inline void check_floating(const at::Tensor& t, const char* name) {
  TORCH_CHECK(at::isFloatingType(t.scalar_type()), "yolov9k: ", name,
              " must be a floating-point tensor, got ", t.scalar_type());
}

// (N, 4) floating boxes.
inline void check_boxes(const at::Tensor& t, const char* name) {
  TORCH_CHECK(t.dim() == 2 && t.size(1) == 4, "yolov9k: ", name, " must have shape (N, 4), got ",
              t.sizes());
  check_floating(t, name);
}

}  // namespace yolov9k
