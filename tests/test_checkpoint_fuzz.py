"""Issue 13: mutated real checkpoints either load or raise a documented error in one line.

Sources: the official-format gelan-t fixture and a checkpoint saved by our own code. Pickle
mutations are written back with correct CRCs (so they reach the unpicklers and the module walk);
raw mutations change or cut the file itself (zip layer, CRC checks). The cases are seeded, so a
failure reproduces; ``YOLOV9K_FUZZ_CASES`` sets the count per source and kind (default: 4 pickle and
8 file cases) and ``YOLOV9K_FUZZ_SEED`` draws other cases.
"""

from __future__ import annotations

import os
import random
import time
from pathlib import Path

import pytest
from checkpoint_forge import Entry, read_entries, write_zip

from yolov9k.checkpoint import load_model, save_checkpoint
from yolov9k.io.safe_pickle import UnsafeCheckpointError

PICKLE_CASES = int(os.environ.get("YOLOV9K_FUZZ_CASES", "4"))  # each reaches the unpicklers: ~1 s
FILE_CASES = int(os.environ.get("YOLOV9K_FUZZ_CASES", "8"))  # most stop at a CRC: ~0.1 s
SEED = os.environ.get("YOLOV9K_FUZZ_SEED", "")
SECONDS_PER_CASE = 10.0  # generous: a loaded case builds a model on a busy 2-core machine


@pytest.fixture(scope="module")
def sources(fixtures_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    official = fixtures_dir / "gelan-t_official_format.pt"
    ours = save_checkpoint(tmp_path_factory.mktemp("fuzz") / "best.pt", load_model(official), epoch=3)
    return {"official": official, "ours": ours}


def mutate(data: bytes, rng: random.Random) -> bytes:
    """One of: a few bytes overwritten, cut short, a run deleted, random bytes inserted."""
    out = bytearray(data)
    kind = rng.randrange(4)
    at = rng.randrange(len(out))
    if kind == 0:
        for _ in range(rng.randint(1, 4)):
            out[rng.randrange(len(out))] = rng.randrange(256)
    elif kind == 1:
        del out[at:]
    elif kind == 2:
        del out[at : at + rng.randint(1, 16)]
    else:
        out[at:at] = rng.randbytes(rng.randint(1, 8))
    return bytes(out)


def _with_mutated_pickle(entries: list[Entry], rng: random.Random, path: Path) -> Path:
    changed = [
        Entry(e.name, mutate(e.data, rng) if e.name.endswith("/data.pkl") else e.data) for e in entries
    ]
    return write_zip(path, changed)


def _check_outcome(path: Path, what: str) -> str:
    """Load ``path``; return 'loaded' or the error type, failing on anything undocumented."""
    start = time.perf_counter()
    try:
        load_model(path)
        outcome = "loaded"
    except (ValueError, UnsafeCheckpointError) as e:
        text = str(e)
        assert "\n" not in text and len(text) < 400, f"{what}: message not one short line: {text!r}"
        outcome = type(e).__name__
    except Exception as e:  # noqa: BLE001  (the point of the test: nothing else may escape)
        pytest.fail(f"{what}: undocumented {type(e).__name__}: {e}")
    assert time.perf_counter() - start < SECONDS_PER_CASE, f"{what}: took too long"
    return outcome


@pytest.mark.parametrize("source", ["official", "ours"])
def test_mutated_pickles(sources: dict[str, Path], tmp_path: Path, source: str) -> None:
    entries = read_entries(sources[source])
    rng = random.Random(f"pickle-{source}{SEED}")
    outcomes = [
        _check_outcome(_with_mutated_pickle(entries, rng, tmp_path / f"{i}.pt"), f"{source} pickle case {i}")
        for i in range(PICKLE_CASES)
    ]
    assert len(outcomes) == PICKLE_CASES and any(o != "loaded" for o in outcomes)


@pytest.mark.parametrize("source", ["official", "ours"])
def test_mutated_files(sources: dict[str, Path], tmp_path: Path, source: str) -> None:
    data = sources[source].read_bytes()
    rng = random.Random(f"file-{source}{SEED}")
    outcomes = []
    for i in range(FILE_CASES):
        path = tmp_path / f"{i}.pt"
        path.write_bytes(mutate(data, rng))
        outcomes.append(_check_outcome(path, f"{source} file case {i}"))
    assert len(outcomes) == FILE_CASES and any(o != "loaded" for o in outcomes)
