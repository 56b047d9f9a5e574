"""A classifier head applied to pooled features: the part of a bundle a site can refit (numpy only).

The model's scores are ``mean_hw(cam_features) @ cam.weights + cam.bias`` (global average pooling, then
the dense layer; measured on the shipped bundle: within 0.025 logits of the int8 model's own scores, the
requantization of the pooled vector and the dense layer inside the model). A *site bundle*
(``device site-adapt``, device/site_adapt.py) keeps the model and carries a refitted head in its manifest
(``head``); the engine then computes the logits from the pooled feature map through it.

Two things are defined here, once, for ``device/model/bundle.py``, the engine, ``device site-adapt`` and
``model_build/head_data.py``:

* :class:`HeadSpec` — the manifest's ``head`` section (``weights`` ``[C][K]``, ``bias`` ``[K]``, the ``base``
  bundle it was refitted from, and what the ``site`` data was), with parsing and validation whose errors
  name the key;
* :class:`HeadData` — the compact training data a bundle ships for refits (``head_data/features.npz``, ~0.2 MB):
  what a refit needs of the images the head was trained on and of the held-out test split (their base logits
  and their pooled features on the top principal directions).
"""

from __future__ import annotations

import io
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from device.errors import BundleError

HEAD_DATA_FILE = "head_data/features.npz"  # inside a bundle, POSIX
HEAD_DATA_FORMAT = 1
SIGNING_UNSIGNED = "unsigned-site"  # head.site.signing when no site key signed the bundle


# --- the computation ----------------------------------------------------------------------------


def pool_features(features: np.ndarray) -> np.ndarray:
    """Global average pooling of a dequantized feature map ``[h, w, C]`` (or ``[1, h, w, C]``) -> ``[C]``."""
    array = np.asarray(features, dtype=np.float64)
    if array.ndim == 4 and array.shape[0] == 1:
        array = array[0]
    if array.ndim != 3:
        raise ValueError(f"feature map must be [h, w, C], got shape {list(array.shape)}")
    pooled: np.ndarray = array.reshape(-1, array.shape[-1]).mean(axis=0)
    return pooled


def head_logits(pooled: np.ndarray, weights: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """Logits of pooled features ``[C]`` or ``[N, C]`` through a dense head ``weights [C, K]``, ``bias [K]``."""
    return np.asarray(pooled, dtype=np.float64) @ np.asarray(weights, dtype=np.float64) + np.asarray(bias, dtype=np.float64)


def head_scores(features: np.ndarray, weights: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """A site bundle's scores: the dequantized feature map ``[h, w, C]`` pooled, through the head (float32, as the
    scores tensor is read). The engine and ``device site-adapt``'s reference frame both compute it here."""
    return head_logits(pool_features(features), weights, bias).astype(np.float32)


# --- the manifest section -----------------------------------------------------------------------


@dataclass(frozen=True)
class BaseIdentity:
    """The bundle a head was refitted from (its identity as results carry it)."""

    name: str
    version: str
    sha256: str  # the model file's sha256 (the same model.tflite: a site bundle never changes the backbone)


@dataclass(frozen=True)
class HeadSpec:
    """The manifest's ``head``: logits = pool(cam_features) @ weights + bias, replacing the model's own scores."""

    weights: tuple[tuple[float, ...], ...]  # [C][n_labels]
    bias: tuple[float, ...]  # [n_labels]
    base: BaseIdentity
    site: dict[str, Any] = field(default_factory=dict)  # site data sha256, counts, signing, figures (free form)

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        return np.asarray(self.weights, dtype=np.float64), np.asarray(self.bias, dtype=np.float64)


HEAD_KEYS = ("weights", "bias", "base", "site")
BASE_KEYS = ("name", "version", "sha256")


def parse_head(value: Any, source: str = "manifest") -> HeadSpec | None:
    """The ``head`` section of a manifest as parsed JSON (None when absent). Errors name the key."""
    if value is None:
        return None
    if not isinstance(value, dict):
        raise BundleError(f"{source}: 'head' must be an object with {', '.join(HEAD_KEYS)}")
    missing = [k for k in ("weights", "bias", "base") if k not in value]
    if missing:
        raise BundleError(f"{source}: 'head' needs {', '.join(missing)}")
    unknown = sorted(set(value) - set(HEAD_KEYS))
    if unknown:
        raise BundleError(f"{source}: unknown key(s) in 'head': {', '.join(unknown)}")
    weights = value["weights"]
    if not isinstance(weights, list) or not all(isinstance(row, list) for row in weights):
        raise BundleError(f"{source}: 'head.weights' must be a list of rows [channels][n_labels]")
    try:
        parsed_weights = tuple(tuple(_number(v) for v in row) for row in weights)
    except (TypeError, ValueError) as exc:
        raise BundleError(f"{source}: 'head.weights' must hold finite numbers ({exc})") from exc
    bias = value["bias"]
    if not isinstance(bias, list):
        raise BundleError(f"{source}: 'head.bias' must be a list of numbers [n_labels]")
    try:
        parsed_bias = tuple(_number(v) for v in bias)
    except (TypeError, ValueError) as exc:
        raise BundleError(f"{source}: 'head.bias' must hold finite numbers ({exc})") from exc
    base = value["base"]
    if not isinstance(base, dict) or set(base) != set(BASE_KEYS):
        raise BundleError(f"{source}: 'head.base' must be an object with exactly {', '.join(BASE_KEYS)}")
    for key in BASE_KEYS:
        if not isinstance(base[key], str) or not base[key].strip():
            raise BundleError(f"{source}: 'head.base.{key}' must be a non-empty string")
    site = value.get("site", {})
    if not isinstance(site, dict):
        raise BundleError(f"{source}: 'head.site' must be an object")
    return HeadSpec(parsed_weights, parsed_bias, BaseIdentity(base["name"], base["version"], base["sha256"]), site)


def validate_head(head: HeadSpec, n_labels: int, model_sha256: str, source: str = "manifest", cam_channels: int | None = None) -> None:
    """The head fits the manifest: [C][n_labels] weights (C = the cam feature map's channels when known),
    n_labels biases, and a base with the same model file."""

    def fail(message: str) -> None:
        raise BundleError(f"{source}: {message}")

    if not head.weights or any(len(row) != n_labels for row in head.weights):
        fail(f"'head.weights' must be [channels][{n_labels}] (one column per label)")
    if len(head.bias) != n_labels:
        fail(f"'head.bias' must have {n_labels} numbers (one per label), has {len(head.bias)}")
    if cam_channels is not None and len(head.weights) != cam_channels:
        fail(f"'head.weights' has {len(head.weights)} rows, the feature map 'cam.weights' has {cam_channels} channels")
    if len(head.base.sha256) != 64 or any(c not in "0123456789abcdef" for c in head.base.sha256):
        fail("'head.base.sha256' must be a 64-character lower-case hex digest")
    if head.base.sha256 != model_sha256:
        fail("'head.base.sha256' names another model than 'model_sha256': a head only applies to the model it was refitted on")


def head_to_dict(head: HeadSpec) -> dict[str, Any]:
    return {
        "weights": [list(row) for row in head.weights],
        "bias": list(head.bias),
        "base": {"name": head.base.name, "version": head.base.version, "sha256": head.base.sha256},
        "site": head.site,
    }


def _number(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{value!r} is not a finite number")
    return float(value)


# --- the compact training data a bundle ships ------------------------------------------------------

BASIS_RANK = 64  # principal directions kept of the base training features (82 % of their variance in the shipped bundle)


@dataclass(frozen=True)
class HeadData:
    """What a refit needs of the images the base head was trained (and tested) on, in ~0.2 MB.

    A refit changes the head only inside ``basis`` (``[C, r]``, orthonormal: the top ``r`` principal
    directions of the base training features), ``W = W0 + basis @ A``, ``b = b0 + db``. On those terms an image's
    new logits are exactly ``z + v @ A + db`` with ``z`` its logits through the base head and ``v = x @ basis``
    its pooled features projected on the basis — so the bundle ships ``z`` and ``v`` per image, never the
    images or their 1280-wide features, and the fit on them is exact, not an approximation.

    ``train_*``: the base head's training images (fitted on besides the site's, so the refit does not forget the
    other sites); ``test_*``: the bundle's held-out test split (scored before and after: the no-forgetting
    check). Labels index ``labels``."""

    labels: tuple[str, ...]
    model_sha256: str
    basis: np.ndarray  # [C, r]
    train_v: np.ndarray  # [N, r]
    train_z: np.ndarray  # [N, K] logits through the base head (cam.weights, cam.bias)
    train_y: np.ndarray  # [N] label index
    train_source: np.ndarray  # [N] str
    test_v: np.ndarray
    test_z: np.ndarray
    test_y: np.ndarray
    test_source: np.ndarray
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def channels(self) -> int:
        return int(self.basis.shape[0])

    @property
    def rank(self) -> int:
        return int(self.basis.shape[1])

    def to_bytes(self) -> bytes:
        """``savez_compressed``: the basis and the projected features as int8 with one scale per direction
        (:func:`quantize_columns`; the basis is stored as it was used — see model_build/head_data.py), the logits
        float32."""
        header = {"format": HEAD_DATA_FORMAT, "labels": list(self.labels), "model_sha256": self.model_sha256, **self.meta}
        basis_q, basis_scale = quantize_columns(self.basis)
        v_q, v_scale = quantize_columns(np.vstack([self.train_v, self.test_v]))
        n = len(self.train_v)
        buffer = io.BytesIO()
        np.savez_compressed(
            buffer,
            header=np.array(json.dumps(header)),
            basis=basis_q,
            basis_scale=basis_scale,
            v_scale=v_scale,
            train_v=v_q[:n],
            train_z=self.train_z.astype(np.float32),
            train_y=self.train_y.astype(np.int8),
            train_source=self.train_source.astype(str),
            test_v=v_q[n:],
            test_z=self.test_z.astype(np.float32),
            test_y=self.test_y.astype(np.int8),
            test_source=self.test_source.astype(str),
        )
        return buffer.getvalue()

    @classmethod
    def load(cls, path: Path) -> HeadData:
        """Read and check ``head_data/features.npz``; a BundleError names the file and the problem."""
        try:
            with np.load(path, allow_pickle=False) as npz:
                arrays = {k: npz[k] for k in npz.files}
        except FileNotFoundError:
            raise BundleError(
                f"{path}: missing — this bundle ships no training features for a site refit "
                "(python -m model_build.head_data --bundle DIR --data ... adds them)"
            ) from None
        except (OSError, ValueError) as exc:
            raise BundleError(f"{path}: not a readable features file ({exc})") from exc
        needed = {"header", "basis", "basis_scale", "v_scale"} | {f"{s}_{k}" for s in ("train", "test") for k in ("v", "z", "y", "source")}
        if needed - set(arrays):
            raise BundleError(f"{path}: missing array(s) {', '.join(sorted(needed - set(arrays)))}")
        try:
            header = json.loads(str(arrays["header"]))
        except json.JSONDecodeError as exc:
            raise BundleError(f"{path}: header is not JSON ({exc})") from exc
        if not isinstance(header, dict) or header.get("format") != HEAD_DATA_FORMAT:
            raise BundleError(f"{path}: unknown features format (this software reads format {HEAD_DATA_FORMAT})")
        labels = tuple(header.get("labels", ()))
        f32 = {k: arrays[k].astype(np.float32) for k in ("train_z", "test_z")}
        try:
            f32["basis"] = arrays["basis"].astype(np.float32) * arrays["basis_scale"].astype(np.float32)
            f32["train_v"] = arrays["train_v"].astype(np.float32) * arrays["v_scale"].astype(np.float32)
            f32["test_v"] = arrays["test_v"].astype(np.float32) * arrays["v_scale"].astype(np.float32)
        except ValueError as exc:
            raise BundleError(f"{path}: scales do not match the arrays ({exc})") from exc
        data = cls(
            labels,
            str(header.get("model_sha256", "")),
            f32["basis"],
            f32["train_v"],
            f32["train_z"],
            arrays["train_y"].astype(np.int64),
            arrays["train_source"],
            f32["test_v"],
            f32["test_z"],
            arrays["test_y"].astype(np.int64),
            arrays["test_source"],
            {k: v for k, v in header.items() if k not in ("format", "labels", "model_sha256")},
        )
        if data.basis.ndim != 2 or not np.isfinite(data.basis).all():
            raise BundleError(f"{path}: basis must be a finite [channels, rank] array")
        for split in ("train", "test"):
            v, z, y, s = (getattr(data, f"{split}_{k}") for k in ("v", "z", "y", "source"))
            n = v.shape[0]
            if v.shape != (n, data.rank) or z.shape != (n, len(labels)) or y.shape != (n,) or s.shape != (n,):
                raise BundleError(
                    f"{path}: {split} arrays disagree in shape (v {list(v.shape)}, z {list(z.shape)}, "
                    f"y {list(y.shape)}, source {list(s.shape)}; rank {data.rank}, {len(labels)} labels)"
                )
            if n and (y.min() < 0 or y.max() >= len(labels)):
                raise BundleError(f"{path}: {split}_y holds a label index outside {list(labels)}")
            if not (np.isfinite(v).all() and np.isfinite(z).all()):
                raise BundleError(f"{path}: {split} features hold non-finite values")
        return data


def quantize_columns(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """int8 values and one float32 scale per column (``x ~= q * scale``, error <= scale / 2 = max|column| / 254)."""
    x = np.asarray(x, dtype=np.float64)
    scale = np.maximum(np.abs(x).max(axis=0) if len(x) else np.ones(x.shape[1]), 1e-12) / 127.0
    return np.clip(np.round(x / scale), -127, 127).astype(np.int8), scale.astype(np.float32)


def dequantize_columns(x: np.ndarray) -> np.ndarray:
    """What :meth:`HeadData.load` reads back for ``x`` after :func:`quantize_columns`."""
    q, scale = quantize_columns(x)
    restored: np.ndarray = q.astype(np.float32) * scale
    return restored


def principal_basis(x: np.ndarray, rank: int = BASIS_RANK) -> tuple[np.ndarray, float]:
    """The top ``rank`` principal directions ``[C, rank]`` of features ``x [N, C]`` and the share of variance they hold."""
    centred = np.asarray(x, dtype=np.float64) - np.mean(x, axis=0)
    _, s, vt = np.linalg.svd(centred, full_matrices=False)
    rank = min(rank, vt.shape[0])
    return vt[:rank].T.copy(), float(np.sum(s[:rank] ** 2) / max(np.sum(s**2), 1e-30))
