"""Compact training data for site refits: pooled features of a built bundle's own training and test images.

``device site-adapt`` refits a bundle's head with a clinic's normal scans. So that the refit does not forget
the sites the model was trained on, it fits on the base training images too — not the images (a device has
no datasets), their pooled feature vectors, which are all a linear head needs. This module finds the images
a bundle was trained and tested on again (``report/split.csv``, as :mod:`model_build.rescore` does),
computes each one's pooled ``cam_features`` with the bundle's own int8 model on the device's path
(``decode_sample`` -> ``device.engine.Classifier.invoke``), and adds them to the bundle as
``head_data/features.npz`` in the compact form of ``device.head.HeadData``: each image's base logits and its
features on the top 64 principal directions of the training features (the directions a refit may change the
head in), int8 with a scale per direction — ~0.2 MB for the shipped bundle's 1490 training + 317 test images,
where their full 1280-wide features would take 2.4 MB compressed and break the bundle's 5 MB budget::

    python -m model_build.head_data --bundle models/sonopi-lite0 --data ../shared/datasets/busi \
        --data ../shared/datasets/bus-bra
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from device.engine import Classifier
from device.errors import BundleError
from device.head import (
    BASIS_RANK,
    HEAD_DATA_FILE,
    HeadData,
    dequantize_columns,
    head_logits,
    pool_features,
    principal_basis,
)
from device.model.bundle import ModelBundle, edit_bundle, load_bundle
from model_build.data import DatasetError, Sample, decode_sample
from model_build.rescore import RescoreError, find_samples, read_split_rows

log = logging.getLogger(__name__)


def pooled_features(classifier: Classifier, samples: Sequence[Sample]) -> np.ndarray:
    """``[N, C]`` pooled feature maps of ``samples``, each decoded exactly as the device decodes a frame."""
    spec, cam = classifier.manifest.input, classifier.manifest.cam
    if cam is None:
        raise BundleError(f"model {classifier.manifest.name}: no class-activation weights, so no pooled features to read")
    out = np.zeros((len(samples), len(cam.weights)), dtype=np.float32)
    for i, sample in enumerate(samples):
        grey = decode_sample(sample, spec)
        pixels = np.repeat(grey[:, :, None], spec.channels, axis=2)
        _, features = classifier.invoke(classifier.input_tensor(pixels), with_features=True)
        assert features is not None  # a bundle with cam weights has the feature-map output (bundle validation)
        out[i] = pool_features(features)
        if (i + 1) % 200 == 0:
            log.info("features: %d/%d", i + 1, len(samples))
    return out


def extract(bundle: ModelBundle, roots: Sequence[str | os.PathLike[str]], threads: int = 2, rank: int = BASIS_RANK) -> HeadData:
    """The bundle's training (``train``) and held-out (``test``) images from its split, in the compact form
    of :class:`device.head.HeadData`: base logits and features on the training features' top ``rank`` directions."""
    m = bundle.manifest
    if m.cam is None or m.outputs.cam_features is None:
        raise BundleError(f"model bundle {bundle.path}: no 'outputs.cam_features': it has no feature map to refit a head on")
    classifier = Classifier(bundle, threads=threads)
    lookup = {name: i for i, name in enumerate(m.labels)}
    full: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
    skipped_all: dict[str, int] = {}
    for split in ("train", "test"):
        samples, _, skipped = find_samples(read_split_rows(bundle, split), roots)
        for source, n in skipped.items():
            skipped_all[f"{split}:{source}"] = n
        if not samples:
            raise RescoreError(f"none of the bundle's {split} images were found in {', '.join(map(str, roots))}")
        start = time.perf_counter()
        x = pooled_features(classifier, samples)
        log.info("%s: %d images in %.0f s", split, len(samples), time.perf_counter() - start)
        y = np.array([lookup[s.label] for s in samples], dtype=np.int64)
        sources = np.array([s.source if s.view == "full" else f"{s.source}#{s.view}" for s in samples])
        full[split] = (x, y, sources)
    if skipped_all:
        log.warning("split rows of sources not given with --data were left out: %s", skipped_all)
    basis, explained = principal_basis(full["train"][0], rank)
    basis = dequantize_columns(basis).astype(np.float64)  # as stored: v below is computed on the stored basis
    weights, bias = np.asarray(m.cam.weights, dtype=np.float64), np.asarray(m.cam.bias, dtype=np.float64)
    parts = {}
    for split, (x, y, sources) in full.items():
        parts[split] = (x @ basis, head_logits(x, weights, bias), y, sources)
    meta = {
        "model_version": m.version,
        "channels": int(basis.shape[0]),
        "rank": int(basis.shape[1]),
        "explained_variance": round(explained, 4),
        "pooling": "mean",
        "skipped": skipped_all,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    log.info("basis: %d directions hold %.1f %% of the training features' variance", basis.shape[1], 100 * explained)
    return HeadData(m.labels, m.model_sha256, basis, *parts["train"], *parts["test"], meta=meta)


def add_to_bundle(bundle_dir: Path, roots: Sequence[str | os.PathLike[str]], threads: int = 2) -> tuple[HeadData, int]:
    """Extract and write ``head_data/features.npz`` into an unsigned bundle; returns the data and its size in bytes."""
    bundle = load_bundle(bundle_dir)
    data = extract(bundle, roots, threads)
    blob = data.to_bytes()
    edit_bundle(bundle_dir, files={HEAD_DATA_FILE: blob})
    return data, len(blob)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m model_build.head_data", description=__doc__.split("\n\n")[0])
    parser.add_argument("--bundle", required=True, type=Path, help="a built, unsigned bundle with report/split.csv")
    parser.add_argument("--data", action="append", required=True, help="the dataset roots it was built from; repeat")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        data, size = add_to_bundle(args.bundle, args.data, args.threads)
    except (BundleError, RescoreError, DatasetError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(
        f"{args.bundle / HEAD_DATA_FILE}: {len(data.train_y)} training and {len(data.test_y)} test images, "
        f"{data.channels} channels on {data.rank} directions ({100 * data.meta['explained_variance']:.1f} % of the "
        f"variance), {size / 1e3:.0f} kB"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
