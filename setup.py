"""Build script: compiles the native extension ``yolov9k._C`` with torch.utils.cpp_extension.

Install with ``pip install --no-build-isolation -e .`` after installing torch. C++ CPU sources are
always built; CUDA sources (``csrc/cuda/*.cu``) are added when torch has CUDA and nvcc is found, or
when ``YOLOV9K_FORCE_CUDA=1`` (compile check without a GPU). ``YOLOV9K_NO_EXT=1`` skips the
extension entirely (pure-PyTorch fallback).
"""

from __future__ import annotations

import glob
import os
import sys

from setuptools import find_packages, setup

ROOT = os.path.dirname(os.path.abspath(__file__))

try:
    import torch
    from torch.utils import cpp_extension
except ImportError:  # pragma: no cover - build-time guard
    sys.exit(
        "yolov9k: torch is not installed. Install torch first (e.g. `pip install torch`), then "
        "`pip install --no-build-isolation -e .`."
    )


def _flag(name: str) -> bool:
    return os.environ.get(name, "0").lower() in ("1", "true", "yes")


def _cuda_include_dirs() -> list[str]:
    """Headers of the pip CUDA wheels (cuBLAS etc.) that ATen's CUDA headers pull in."""
    site = os.path.dirname(os.path.dirname(torch.__file__))
    return sorted(glob.glob(os.path.join(site, "nvidia", "cu*", "include")))


def make_c_extension():
    """CppExtension, or CUDAExtension when CUDA can be built (torchvision's make_C_extension)."""
    if _flag("YOLOV9K_NO_EXT"):
        return []
    rel = lambda paths: [os.path.relpath(p, ROOT) for p in paths]  # noqa: E731
    sources = rel(sorted(glob.glob(os.path.join(ROOT, "csrc", "*.cpp"))))
    sources += rel(sorted(glob.glob(os.path.join(ROOT, "csrc", "cpu", "*.cpp"))))
    cuda_sources = rel(sorted(glob.glob(os.path.join(ROOT, "csrc", "cuda", "*.cu"))))
    cuda_sources += rel(sorted(glob.glob(os.path.join(ROOT, "csrc", "cuda", "*.cpp"))))

    with_cuda = bool(cuda_sources) and (
        _flag("YOLOV9K_FORCE_CUDA")
        or (
            torch.version.cuda is not None
            and cpp_extension.CUDA_HOME is not None
            and torch.cuda.is_available()
        )
    )
    cxx = ["-O3", "-fopenmp", "-DNDEBUG"]
    ldflags = ["-fopenmp"]
    if _flag("YOLOV9K_SANITIZE"):  # ASan/UBSan build for the fuzz tests
        cxx = ["-O1", "-g", "-fno-omit-frame-pointer", "-fsanitize=address,undefined", "-fopenmp"]
        ldflags += ["-fsanitize=address,undefined"]
    define_macros = []
    include_dirs = [os.path.join(ROOT, "csrc")]
    if with_cuda:
        define_macros.append(("WITH_CUDA", None))
        include_dirs += _cuda_include_dirs()
        nvcc = ["-O3", "--expt-relaxed-constexpr", "-lineinfo", "-DNDEBUG"]
        return [
            cpp_extension.CUDAExtension(
                "yolov9k._C",
                sources + cuda_sources,
                include_dirs=include_dirs,
                define_macros=define_macros,
                extra_compile_args={"cxx": cxx, "nvcc": nvcc},
                extra_link_args=ldflags,
            )
        ]
    return [
        cpp_extension.CppExtension(
            "yolov9k._C",
            sources,
            include_dirs=include_dirs,
            define_macros=define_macros,
            extra_compile_args={"cxx": cxx},
            extra_link_args=ldflags,
        )
    ]


packages = find_packages(include=["yolov9k", "yolov9k.*"]) + ["yolov9k.kernels"]

setup(
    packages=packages,
    package_dir={"yolov9k.kernels": "kernels"},
    ext_modules=make_c_extension(),
    cmdclass={"build_ext": cpp_extension.BuildExtension.with_options(use_ninja=True)},
)
