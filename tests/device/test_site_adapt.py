"""Site adaptation without the datasets: the head applied to pooled features reproduces the shipped model's own
scores; the Newton fit reaches the minimum of its objective and leaves the frozen label columns alone; the AUC
matches a pairwise count; the compact head data round-trips and refuses damaged files naming them; the
manifest's ``head`` section is validated with errors naming the key, and a bundle carrying a head is scored
through it by the engine (heat maps too) while bundles without one load and score as before."""

from __future__ import annotations

import csv
import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from device.engine import Classifier
from device.errors import BundleError
from device.head import (
    HEAD_DATA_FILE,
    BaseIdentity,
    HeadData,
    HeadSpec,
    head_logits,
    head_to_dict,
    parse_head,
    pool_features,
    quantize_columns,
)
from device.imageio import decode_image_file
from device.model.bundle import Manifest, edit_bundle, load_bundle
from device.model.preprocess import prepare
from device.site_adapt import (
    MIN_TEMPERATURE_LESIONS,
    TEMPERATURE_RANGE,
    Rule,
    _site_temperature,
    auc,
    figures,
    fit_temperature,
    fit_update,
    mean_nll,
    scanner_check,
    softmax_rows,
)

HEAD_TOLERANCE = 0.03  # logits: the int8 model requantizes the pooled vector and the dense layer inside itself


def test_pooled_features_through_the_cam_weights_are_the_models_scores(shipped_bundle_dir: Path) -> None:
    bundle = load_bundle(shipped_bundle_dir)
    classifier = Classifier(bundle, threads=1)
    frame = decode_image_file(shipped_bundle_dir / "reference" / "frame.png")
    tensor = classifier.input_tensor(prepare(frame, bundle.manifest.input).pixels)
    scores, features = classifier.invoke(tensor, with_features=True)
    cam = bundle.manifest.cam
    logits = head_logits(pool_features(features), np.array(cam.weights), np.array(cam.bias))
    assert np.abs(logits - scores).max() < HEAD_TOLERANCE, (logits, scores)


def _synthetic(seed: int = 0, n: int = 300, r: int = 6, k: int = 3) -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(seed)
    v = rng.normal(size=(n, r))
    z = rng.normal(size=(n, k))
    y = rng.integers(0, k, size=n)
    w = rng.uniform(0.5, 1.5, size=n) / n
    return v, z, y, w


def _gradient(v, z, y, w, a, db, l2, bias_l2) -> tuple[np.ndarray, np.ndarray]:
    p = softmax_rows(z + v @ a + db)
    residual = w[:, None] * (p - np.eye(z.shape[1])[y])
    return v.T @ residual + l2 * a, residual.sum(axis=0) + bias_l2 * db


def test_newton_fit_reaches_the_minimum() -> None:
    v, z, y, w = _synthetic()
    a, db = fit_update(v, z, y, w, l2=0.01, bias_l2=0.001)
    ga, gb = _gradient(v, z, y, w, a, db, 0.01, 0.001)
    assert np.abs(ga).max() < 1e-7 and np.abs(gb).max() < 1e-7
    assert np.abs(a).max() > 1e-3  # it moved: the data pull the head away from the base


def test_frozen_columns_keep_the_base_head_and_the_free_one_is_optimal() -> None:
    v, z, y, w = _synthetic(seed=1)
    a, db = fit_update(v, z, y, w, l2=0.01, bias_l2=0.001, free=[0])
    assert np.all(a[:, 1:] == 0) and np.all(db[1:] == 0)
    ga, gb = _gradient(v, z, y, w, a, db, 0.01, 0.001)
    assert np.abs(ga[:, 0]).max() < 1e-7 and abs(gb[0]) < 1e-7


def test_a_stronger_penalty_keeps_the_head_nearer_the_base() -> None:
    v, z, y, w = _synthetic(seed=2)
    loose, _ = fit_update(v, z, y, w, l2=0.001)
    tight, _ = fit_update(v, z, y, w, l2=1.0)
    assert np.linalg.norm(tight) < np.linalg.norm(loose)


def test_auc_is_the_pairwise_share_with_ties_counted_half() -> None:
    rng = np.random.default_rng(3)
    pos, neg = rng.integers(0, 5, size=40).astype(float), rng.integers(0, 5, size=30).astype(float)
    pairs = (pos[:, None] > neg[None, :]).mean() + 0.5 * (pos[:, None] == neg[None, :]).mean()
    assert auc(pos, neg) == pytest.approx(pairs)
    assert np.isnan(auc(pos, np.array([])))


def test_scanner_check_lists_images_far_from_the_rest() -> None:
    rng = np.random.default_rng(4)
    one = rng.normal([70, 35, 180, 0.0, 0.06, 0.993, 0.95], [20, 8, 40, 0.01, 0.015, 0.003, 0.02], size=(60, 7))
    assert not scanner_check(one, [f"a{i}" for i in range(60)]).mixed
    other = one[:6].copy()
    other[:, 5] = 0.975  # a coarser speckle: another scanner
    check = scanner_check(np.vstack([one, other]), [f"a{i}" for i in range(60)] + [f"b{i}" for i in range(6)])
    assert check.mixed and set(check.odd) >= {f"b{i}" for i in range(6)}


def _head_data(r: int = 4, c: int = 8, k: int = 3) -> HeadData:
    rng = np.random.default_rng(5)
    basis = np.linalg.qr(rng.normal(size=(c, r)))[0]
    return HeadData(
        ("normal", "benign", "malignant"),
        "a" * 64,
        basis,
        rng.normal(size=(20, r)),
        rng.normal(size=(20, k)),
        rng.integers(0, k, 20),
        np.array(["busi"] * 20),
        rng.normal(size=(5, r)),
        rng.normal(size=(5, k)),
        rng.integers(0, k, 5),
        np.array(["bus-bra"] * 5),
        meta={"rank": r},
    )


def test_head_data_round_trips_within_its_quantization(tmp_path: Path) -> None:
    data = _head_data()
    path = tmp_path / "features.npz"
    path.write_bytes(data.to_bytes())
    back = HeadData.load(path)
    assert back.labels == data.labels and back.model_sha256 == data.model_sha256 and back.meta["rank"] == 4
    assert np.array_equal(back.train_y, data.train_y) and list(back.test_source) == list(data.test_source)
    both_v = np.vstack([data.train_v, data.test_v])  # one scale per direction for both splits
    for name, scale_of in (("basis", data.basis), ("train_v", both_v), ("test_v", both_v)):
        original = getattr(data, name)
        step = np.abs(scale_of).max(axis=0) / 127
        assert np.all(np.abs(getattr(back, name) - original) <= step / 2 + 1e-6), name
    assert np.allclose(back.train_z, data.train_z, atol=1e-6)
    q, scale = quantize_columns(data.basis)
    assert q.dtype == np.int8 and scale.shape == (4,)


def test_head_data_refuses_a_missing_or_damaged_file(tmp_path: Path) -> None:
    with pytest.raises(BundleError, match="features.npz: missing"):
        HeadData.load(tmp_path / "features.npz")
    (tmp_path / "features.npz").write_bytes(b"not numpy")
    with pytest.raises(BundleError, match="features.npz: not a readable features file"):
        HeadData.load(tmp_path / "features.npz")
    data = dataclasses.replace(_head_data(), train_y=np.full(20, 7))
    (tmp_path / "features.npz").write_bytes(data.to_bytes())
    with pytest.raises(BundleError, match="train_y holds a label index outside"):
        HeadData.load(tmp_path / "features.npz")


def _head(channels: int, sha: str, scale: float = 0.0, n_labels: int = 3) -> dict:
    rng = np.random.default_rng(6)
    return head_to_dict(
        HeadSpec(
            tuple(map(tuple, (rng.normal(size=(channels, n_labels)) * scale).tolist())),
            (0.0,) * n_labels,
            BaseIdentity("sonopi-lite0", "base", sha),
            {"signing": "unsigned-site"},
        )
    )


@pytest.mark.parametrize(
    "change, key",
    [
        (lambda h: h.update(weights="x"), "'head.weights' must be a list of rows"),
        (lambda h: h["weights"][0].append(1.0), "'head.weights' must be \\[channels\\]\\[3\\]"),
        (lambda h: h["weights"][0].__setitem__(0, float("nan")), "'head.weights' must hold finite numbers"),
        (lambda h: h.update(bias=[0.0, 0.0]), "'head.bias' must have 3 numbers"),
        (lambda h: h.update(base={"name": "x"}), "'head.base' must be an object with exactly name, version, sha256"),
        (lambda h: h["base"].update(sha256="b" * 64), "'head.base.sha256' names another model"),
        (lambda h: h.update(extra=1), "unknown key\\(s\\) in 'head': extra"),
        (lambda h: h.pop("bias"), "'head' needs bias"),
        (lambda h: h.update(weights=h["weights"][:10]), "'head.weights' has 10 rows, the feature map 'cam.weights' has 1280"),
    ],
)
def test_a_malformed_head_is_refused_naming_the_key(shipped_bundle_dir: Path, change, key: str) -> None:
    manifest = load_bundle(shipped_bundle_dir).manifest
    data = manifest.to_dict()
    head = _head(len(manifest.cam.weights), manifest.model_sha256)
    change(head)
    data.update(head=head)  # the shipped manifest keeps its own format (3, or more with a segmentation model)
    with pytest.raises(BundleError, match=key):
        Manifest.from_dict(data, source="test manifest")


def test_parse_head_is_none_without_a_head() -> None:
    assert parse_head(None) is None


@pytest.fixture()
def headed_copy(shipped_bundle_dir: Path, tmp_path: Path):
    """A copy of the shipped bundle whose manifest carries a head: the base weights plus a known change."""

    def make(delta_normal: float) -> Path:
        dst = tmp_path / f"headed{delta_normal}"
        shutil.copytree(shipped_bundle_dir, dst, ignore=shutil.ignore_patterns("signature.json", "head_data"))
        manifest = load_bundle(dst).manifest
        weights = np.array(manifest.cam.weights)
        bias = np.array(manifest.cam.bias)
        bias[manifest.labels.index("normal")] += delta_normal
        head = HeadSpec(
            tuple(map(tuple, weights.tolist())),
            tuple(bias.tolist()),
            BaseIdentity(manifest.name, manifest.version, manifest.model_sha256),
            {"signing": "unsigned-site"},
        )
        edit_bundle(dst, manifest=dataclasses.replace(manifest, head=head, version=manifest.version + "+site-test"))
        return dst

    return make


def test_the_engine_scores_a_headed_bundle_through_its_head(shipped_bundle_dir: Path, headed_copy) -> None:
    frame = decode_image_file(shipped_bundle_dir / "reference" / "frame.png")
    base = Classifier(load_bundle(shipped_bundle_dir), threads=1)
    same_dir = headed_copy(0.0)
    same = Classifier(load_bundle(same_dir), threads=1)
    shifted = Classifier(load_bundle(headed_copy(3.0)), threads=1)
    tensor = base.input_tensor(prepare(frame, base.manifest.input).pixels)
    base_scores, _ = base.invoke(tensor)
    same_scores, _ = same.invoke(tensor)
    shifted_scores, features = shifted.invoke(tensor, with_features=True)
    assert np.abs(same_scores - base_scores).max() < HEAD_TOLERANCE  # the base weights as a head: the model's scores
    assert shifted_scores[0] - same_scores[0] == pytest.approx(3.0, abs=1e-5)  # the head, not the model, scores
    assert features is not None and features.shape[-1] == 1280
    result = shifted.classify(frame, heatmap=True)
    assert result.probabilities["normal"] > base.classify(frame).probabilities["normal"]
    saved = json.loads((same_dir / "manifest.json").read_text())
    assert saved["format_version"] >= 3 and saved["head"]["base"]["sha256"] == base.manifest.model_sha256


def test_the_shipped_bundle_carries_compact_head_data(shipped_bundle_dir: Path) -> None:
    data = HeadData.load(shipped_bundle_dir / HEAD_DATA_FILE)
    manifest = load_bundle(shipped_bundle_dir).manifest
    assert data.model_sha256 == manifest.model_sha256 and data.labels == manifest.labels
    assert data.channels == len(manifest.cam.weights) and data.rank == 64
    split = [row["split"] for row in csv.DictReader((shipped_bundle_dir / "report" / "split.csv").open(encoding="utf-8"))]
    assert (len(data.train_y), len(data.test_y)) == (split.count("train"), split.count("test"))  # the bundle's split
    assert (shipped_bundle_dir / HEAD_DATA_FILE).stat().st_size < 300_000
    # the stored logits are the base head's: its own training images are mostly right
    # (v1: > 0.9; v2, whose training images include the lesion-free and lesion-centred views: 0.897; chance ≤ 0.5)
    assert (data.train_z.argmax(axis=1) == data.train_y).mean() > 0.85


def test_site_cancers_may_only_lower_the_thresholds() -> None:
    """_site_thresholds: with >= 20 site cancers the threshold is re-chosen for 95 % sensitivity on them, per mode
    never above the mode's own (so the modes stay ordered); with fewer, None (the base's apply)."""
    from device.model.bundle import DecisionSpec, ModeSpec
    from device.site_adapt import Rule, _site_thresholds

    labels = ("normal", "benign", "malignant")
    spec = DecisionSpec(modes={"high_sensitivity": ModeSpec(0.02), "balanced": ModeSpec(0.05), "high_specificity": ModeSpec(0.2)})
    rule = Rule(labels, 1.0, 0.05, 0.5)
    rng = np.random.default_rng(7)

    def probs(p_mal: np.ndarray) -> np.ndarray:
        return np.stack([(1 - p_mal) / 2, (1 - p_mal) / 2, p_mal], axis=1)

    y = np.array([2] * 30 + [1] * 30)
    low = _site_thresholds(spec, probs(np.concatenate([rng.uniform(0.01, 0.5, 30), rng.uniform(0, 0.01, 30)])), y, labels, rule)
    assert low is not None
    modes = low["modes"]
    assert modes["high_sensitivity"] <= modes["balanced"] <= modes["high_specificity"]
    assert all(modes[name] <= spec.modes[name].malignant_threshold for name in modes)
    assert modes["balanced"] < 0.05 and low["at_site_threshold"]["sensitivity"] >= 0.95
    high = _site_thresholds(spec, probs(np.concatenate([rng.uniform(0.6, 0.9, 30), rng.uniform(0, 0.01, 30)])), y, labels, rule)
    assert high["modes"] == {name: m.malignant_threshold for name, m in spec.modes.items()}  # never raised
    assert _site_thresholds(spec, probs(rng.uniform(0, 1, 60)), np.array([2] * 19 + [1] * 41), labels, rule) is None


def _calibration_set(temperature: float, n: int = 20000, seed: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """Logits and labels drawn from softmax(logits / temperature): that temperature is the calibrated one."""
    rng = np.random.default_rng(seed)
    z = rng.normal(scale=3.0, size=(n, 3))
    p = softmax_rows(z, temperature)
    y = np.array([rng.choice(3, p=row) for row in p])
    return z, y


@pytest.mark.parametrize("true_t", [0.5, 1.0, 2.5])
def test_fit_temperature_recovers_the_calibrated_temperature(true_t: float) -> None:
    z, y = _calibration_set(true_t)
    fitted = fit_temperature(z, y)
    assert abs(fitted - true_t) / true_t < 0.05, fitted
    assert mean_nll(z, y, fitted) <= min(mean_nll(z, y, fitted * 1.05), mean_nll(z, y, fitted / 1.05))


def test_fit_temperature_stays_in_its_range_and_names_bad_shapes() -> None:
    z = np.array([[5.0, 0.0, 0.0]] * 50)
    assert fit_temperature(z, np.zeros(50, dtype=int)) == TEMPERATURE_RANGE[0]  # always right: as sharp as allowed
    with pytest.raises(ValueError, match="do not match"):
        fit_temperature(z, np.zeros(49, dtype=int))


def _rule(temperature: float = 1.0) -> Rule:
    return Rule(("normal", "benign", "malignant"), temperature, 0.3, 0.5)


def test_normals_only_keep_the_base_temperature() -> None:
    z, y = _calibration_set(2.0, n=400)
    y[:] = 0  # only normals held out
    rule = _rule()
    t = _site_temperature(z, y, z, y, z, y, figures(z, y, rule), rule)
    assert not t["refitted"] and t["site"] == t["base"] == 1.0 and "lesion(s) held out" in t["reason"]


def test_held_out_lesions_refit_the_temperature_when_it_keeps_the_cancers() -> None:
    z, y = _calibration_set(2.0, n=2000)
    assert int((y != 0).sum()) >= MIN_TEMPERATURE_LESIONS
    rule = _rule()
    t = _site_temperature(z, y, z, y, z, y, figures(z, y, rule), rule)
    assert t["refitted"] and abs(t["site"] - 2.0) < 0.2 and t["nll_fitted"] < t["nll_base"], t


def test_a_temperature_that_loses_cancers_is_refused() -> None:
    z, y = _calibration_set(0.5, n=2000)  # the fit sharpens: small p(malignant) shrink below the threshold
    rule = _rule(1.0)
    t = _site_temperature(z, y, z, y, z, y, figures(z, y, rule), rule)
    assert t["fitted"] < 0.6 and not t["refitted"] and t["site"] == 1.0
    assert "refused" in t["reason"] and "cancers called suspicious" in t["reason"], t
