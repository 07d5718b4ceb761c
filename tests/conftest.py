"""Test setup. TRITON_INTERPRET must be set before any module defining Triton kernels is imported,
so Triton kernels run on CPU tensors here (see docs/building.md)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402
import torch  # noqa: E402
from reference_data import ReferenceDataError, reference_dir  # noqa: E402  (tests/fixtures, pythonpath)


def assert_close_verbose(
    actual: torch.Tensor,
    expected: torch.Tensor,
    *,
    rtol: float = 0.0,
    atol: float = 0.0,
    what: str = "tensor",
) -> None:
    """torch.testing.assert_close with mismatch statistics in the message."""
    actual, expected = actual.detach().cpu(), expected.detach().cpu()
    assert actual.shape == expected.shape, f"{what}: shape {tuple(actual.shape)} != {tuple(expected.shape)}"
    diff = (actual.double() - expected.double()).abs()
    tol = atol + rtol * expected.double().abs()
    bad = diff > tol
    if bad.any():
        rel = diff / expected.double().abs().clamp_min(1e-12)
        idx = tuple(int(i) for i in torch.nonzero(bad)[0])
        raise AssertionError(
            f"{what}: {int(bad.sum())}/{bad.numel()} elements out of tolerance "
            f"(atol={atol}, rtol={rtol}); max abs diff {diff.max().item():.3e}, "
            f"max rel diff {rel.max().item():.3e}; first at {idx}: "
            f"{actual[idx].item()} vs {expected[idx].item()}"
        )


def make_batchnorm(
    c: int, *, eps: float, momentum: float | None, dtype: torch.dtype = torch.float32, seed: int = 1
) -> torch.nn.BatchNorm2d:
    """BatchNorm2d with non-trivial affine parameters and running statistics (the bn_silu tests)."""
    g = torch.Generator().manual_seed(seed)
    bn = torch.nn.BatchNorm2d(c, eps=eps, momentum=momentum)
    with torch.no_grad():
        bn.weight.copy_(torch.rand(c, generator=g) + 0.5)
        bn.bias.copy_(torch.randn(c, generator=g))
        bn.running_mean.copy_(torch.randn(c, generator=g))
        bn.running_var.copy_(torch.rand(c, generator=g) + 0.5)
    return bn.to(dtype)


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    """The official reference data (tests/fixtures/README.md), unpacked and checked; a missing or
    altered file fails every test that needs it, never skips it."""
    try:
        return reference_dir()
    except ReferenceDataError as e:
        pytest.fail(str(e))


requires_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@contextlib.contextmanager
def single_thread() -> Iterator[None]:
    """torch on one intra-op thread. On a shared 2-core machine OpenMP spinning makes the many small
    ops of these tests (small convs, the references' loops) 10-30x slower on two threads."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@pytest.fixture(scope="module")
def one_thread() -> Iterator[None]:
    """``single_thread`` for a whole module: ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    with single_thread():
        yield
