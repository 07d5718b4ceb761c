"""The verdict of the Triton compile check (.ci/triton_build.py, run by .ci/check_triton_build.sh):
what fails it and what does not. The compiles themselves run in CI (minutes); a planted failure
through the whole check is recorded in benchmarks/RESULTS.md with its command."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

_PATH = Path(__file__).resolve().parents[1] / ".ci" / "triton_build.py"
_spec = importlib.util.spec_from_file_location("triton_build", _PATH)
tb = importlib.util.module_from_spec(_spec)
sys.modules.setdefault("triton_build", tb)  # dataclasses look their module up
_spec.loader.exec_module(tb)


def _row(**kw) -> tb.Row:
    base = dict(
        kernel="k", variant="f32", target=80, triton="3.6.0", registers=64, smem=1024, warps=4, stages=2
    )
    return tb.Row(**{**base, **kw})


def test_clean_rows_pass():
    assert tb.verdict([_row(default=True), _row(target=90, smem=200_000)]) == []


def test_a_compile_error_fails():
    (failure,) = tb.verdict([_row(error="CompilationError: at 12:4")])
    assert failure.startswith("compile error: k [f32] sm_80 Triton 3.6.0")


@pytest.mark.parametrize("stores,loads", [(8, 0), (0, 4), (3400, 3400)])
def test_a_spill_on_a_default_path_fails(stores, loads):
    (failure,) = tb.verdict([_row(default=True, spill_stores=stores, spill_loads=loads, registers=255)])
    assert "spill in a default-path specialisation" in failure


def test_a_spill_off_the_default_path_is_reported_not_failed():
    assert tb.verdict([_row(default=False, spill_stores=3000, spill_loads=3000)]) == []


def test_shared_memory_over_the_limit_fails_only_where_the_code_can_pick_it():
    over_a100 = tb.SMEM_LIMIT[80] + 1
    (failure,) = tb.verdict([_row(smem=over_a100)])
    assert f"shared memory {over_a100} B > {tb.SMEM_LIMIT[80]} B of sm_80" in failure
    assert tb.verdict([_row(smem=over_a100, can_pick=False)]) == []  # pruned at launch
    assert tb.verdict([_row(target=90, smem=over_a100)]) == []  # fits an H100 / H200


def test_sm86_sm89_limit_is_checked_on_the_sm80_code():
    """sm_86 / sm_89 cards (99 KB) run the sm_80 code: a config the pruning keeps there fails."""
    smem = 131072  # fits an A100, not an RTX 30xx / 40xx
    (failure,) = tb.verdict([_row(smem=smem, also_limits={"86": True, "89": False})])
    assert "of sm_86" in failure
    assert tb.verdict([_row(smem=smem, also_limits={"86": False, "89": False})]) == []


def test_report_exit_status(tmp_path, capsys):
    import json
    from dataclasses import asdict

    good, bad = tmp_path / "good.json", tmp_path / "bad.json"
    good.write_text(json.dumps([asdict(_row(default=True))]))
    bad.write_text(json.dumps([asdict(_row(default=True, spill_stores=16, spill_loads=16))]))
    assert tb.report([good], None) == 0
    assert "Triton build check: OK" in capsys.readouterr().out
    assert tb.report([good, bad], tmp_path / "t.md") == 1
    out = capsys.readouterr().out
    assert "FAIL: spill in a default-path specialisation" in out and "FAILED (1 failures)" in out
    assert (tmp_path / "t.md").read_text().startswith("| kernel | variant |")
