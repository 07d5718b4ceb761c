"""yolov9k.convert: official pickles -> weights_only checkpoints; reparameterized and fp16 variants."""

from __future__ import annotations

import pytest
import torch
from conftest import assert_close_verbose

from yolov9k.api.convert import convert
from yolov9k.checkpoint import load_model
from yolov9k.models import build_model

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def official(fixtures_dir):
    return fixtures_dir / "yolov9-t_official_format.pt"


@pytest.fixture(scope="module")
def x():
    return torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))


@pytest.fixture(scope="module")
def reference(official, x):
    """Main-branch output of the official checkpoint, loaded directly."""
    with torch.no_grad():
        return load_model(official)(x)


@pytest.fixture(scope="module")
def converted(official, tmp_path_factory):
    return convert(official, tmp_path_factory.mktemp("convert") / "y9t.pt")


def _plain_only(obj) -> bool:
    if isinstance(obj, dict):
        return all(_plain_only(k) and _plain_only(v) for k, v in obj.items())
    if isinstance(obj, list | tuple):
        return all(_plain_only(v) for v in obj)
    return isinstance(obj, str | int | float | bool | type(None) | torch.Tensor)


def test_official_checkpoint_becomes_weights_only_loadable(official, converted, x, reference, fixtures_dir):
    with pytest.raises(Exception, match="Unsupported global|weights_only"):
        torch.load(official, weights_only=True)  # the point of converting
    out = converted
    ckpt = torch.load(out, weights_only=True)
    assert ckpt["format"] == "yolov9k" and ckpt["nc"] == 80 and _plain_only(ckpt)
    assert not ckpt["reparameterized"]
    fixture_sd = torch.load(fixtures_dir / "yolov9-t_fixture.pt", weights_only=True)["state_dict"]
    for key in ("model.0.conv.weight", "model.29.cv4.0.0.conv.weight"):
        # official weights are the fixture's rounded to fp16; conversion keeps them exactly
        torch.testing.assert_close(
            ckpt["state_dict"][key].float(), fixture_sd[key].half().float(), rtol=0, atol=0
        )
    m = load_model(out)
    assert m.is_dual
    with torch.no_grad():
        assert_close_verbose(m(x), reference, what="converted vs official")


def test_reparameterized_equals_yolov9_main_branch(official, tmp_path, x, reference):
    out = convert(official, tmp_path / "gelan.pt", reparameterize=True)
    ckpt = torch.load(out, weights_only=True)
    gelan_keys = set(build_model("gelan-t").state_dict())
    assert ckpt["reparameterized"] and set(ckpt["state_dict"]) == gelan_keys
    m = load_model(out)
    assert not m.is_dual
    with torch.no_grad():
        assert_close_verbose(m(x), reference, atol=1e-4, what="gelan vs yolov9 main branch")


def test_half_checkpoint_is_exact_for_fp16_official_weights(official, converted, tmp_path, x, reference):
    out = convert(official, tmp_path / "half.pt", half=True)
    sd = torch.load(out, weights_only=True)["state_dict"]
    assert all(v.dtype == torch.float16 for v in sd.values() if v.is_floating_point())
    assert out.stat().st_size < 0.6 * converted.stat().st_size
    with torch.no_grad():
        assert_close_verbose(load_model(out)(x), reference, what="fp16 checkpoint vs official")


def test_bad_inputs(converted, tmp_path):
    with pytest.raises(FileNotFoundError):
        convert(tmp_path / "missing.pt", tmp_path / "out.pt")
    text = tmp_path / "weights.pt"
    text.write_text("this is text, not a checkpoint")
    with pytest.raises(ValueError, match="not a PyTorch checkpoint"):
        convert(text, tmp_path / "out.pt")
    with pytest.raises(ValueError, match="is the source file"):
        convert(converted, converted)
    assert not (tmp_path / "out.pt").exists()
