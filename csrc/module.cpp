// Python entry point of yolov9k._C. Importing the module runs the static TORCH_LIBRARY
// registrations of every source file; ops are then reached through torch.ops.yolov9k.*.
#include <Python.h>
#include <torch/library.h>

#ifdef WITH_CUDA
#include <cuda_runtime_api.h>
#endif

namespace yolov9k {

// CUDA runtime version the extension was compiled against, or -1 for a CPU-only build.
int64_t cuda_version() {
#ifdef WITH_CUDA
  return CUDART_VERSION;
#else
  return -1;
#endif
}

TORCH_LIBRARY_FRAGMENT(yolov9k, m) {
  m.def("_cuda_version() -> int", &cuda_version);
}

}  // namespace yolov9k

static struct PyModuleDef yolov9k_c_module = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1, nullptr};

PyMODINIT_FUNC PyInit__C(void) { return PyModule_Create(&yolov9k_c_module); }
