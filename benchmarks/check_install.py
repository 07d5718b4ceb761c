"""Checks an installed yolov9k the way a user's machine sees it: the packages it needs, the torch and
Triton version floor, and an import of every module (``yolov9k.kernels.*`` included, which exists
only through the installed package's mapping). Prints one line per check; on the first problem,
one line saying what is missing and exit status 1.

Usage (from any folder): python benchmarks/check_install.py [--gpu] [--checkout DIR]
  --gpu       also require a CUDA device, the CUDA build of the extension and Triton
  --checkout  the checkout the import must come from (guards against a stale install)
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import pkgutil
import sys
from pathlib import Path

# The oldest releases this project is checked against (benchmarks/RESULTS.md: the dry run with
# torch 2.11.0 and triton 3.6.0, the versions of the lent GPU machine).
TORCH_FLOOR = (2, 11)
TRITON_FLOOR = (3, 6)
REQUIRED = ("torch", "numpy", "yaml", "cv2", "PIL", "tqdm", "pytest", "pytest_benchmark", "hypothesis")
OPTIONAL = {  # missing: the tests that need them skip with this reason
    "pycocotools": "COCOeval parity tests and the pycocotools benchmark skip",
    "onnx": "ONNX export tests skip",
    "onnxruntime": "ONNX runtime parity tests skip",
    "matplotlib": "plot tests skip",
}


class CheckFailed(SystemExit):
    def __init__(self, message: str) -> None:
        print(f"CHECK FAILED: {message}")
        super().__init__(1)


def _version(text: str) -> tuple[int, int]:
    major, minor = text.split("+")[0].split(".")[:2]
    return int(major), int(minor)


def check_packages(gpu: bool) -> None:
    missing = [name for name in REQUIRED if importlib.util.find_spec(name) is None]
    if gpu and importlib.util.find_spec("triton") is None:
        missing.append("triton")
    if missing:
        raise CheckFailed(f"missing Python packages: {', '.join(missing)} (carry them as wheels)")
    import torch

    if _version(torch.__version__) < TORCH_FLOOR:
        raise CheckFailed(f"torch {torch.__version__} is older than {'.'.join(map(str, TORCH_FLOOR))}")
    line = f"torch {torch.__version__}"
    if importlib.util.find_spec("triton") is not None:
        import triton

        if _version(triton.__version__) < TRITON_FLOOR:
            raise CheckFailed(f"triton {triton.__version__} is older than {'.'.join(map(str, TRITON_FLOOR))}")
        line += f", triton {triton.__version__}"
    print(f"packages: {line}, python {sys.version.split()[0]}")
    for name, effect in OPTIONAL.items():
        if importlib.util.find_spec(name) is None:
            print(f"optional: {name} absent: {effect}")


def import_everything(checkout: Path | None) -> list[str]:
    """Import every module of the installed package; return their names."""
    try:
        import yolov9k.kernels

        import yolov9k
    except ImportError as e:
        raise CheckFailed(f"cannot import the package ({e}); install it with pip install -e .") from e
    where = Path(yolov9k.__file__).resolve().parent
    if checkout is not None and where.parent != checkout.resolve():
        raise CheckFailed(f"yolov9k is imported from {where}, not from the checkout {checkout}")
    names = ["yolov9k", "yolov9k.kernels"]
    for package in (yolov9k, yolov9k.kernels):
        for info in pkgutil.walk_packages(package.__path__, prefix=f"{package.__name__}."):
            if not info.name.endswith(".__main__"):  # importing it would run the CLI
                names.append(info.name)
    for name in names:
        try:
            importlib.import_module(name)
        except Exception as e:  # one clear line, whatever the import raised
            raise CheckFailed(f"import {name}: {type(e).__name__}: {e}") from e
    return names


def check_backends(gpu: bool) -> None:
    import torch

    import yolov9k

    info = yolov9k.ops.backend_info()
    if not info["extension"]:
        raise CheckFailed("the native extension yolov9k._C was not built (see the install log)")
    if gpu:
        if not torch.cuda.is_available():
            raise CheckFailed("no CUDA device visible to torch")
        if info["extension_cuda"] <= 0:
            raise CheckFailed("yolov9k._C was built without CUDA (install with YOLOV9K_FORCE_CUDA=1)")
        if not info["triton"]:
            raise CheckFailed("Triton is not usable here")
    print(f"backends: {info}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gpu", action="store_true")
    parser.add_argument("--checkout", type=Path)
    args = parser.parse_args()
    check_packages(args.gpu)
    names = import_everything(args.checkout)
    kernels = sum(n.startswith("yolov9k.kernels") for n in names)
    print(f"imports: {len(names)} modules, {kernels} of them Triton kernels")
    check_backends(args.gpu)


if __name__ == "__main__":
    main()
