"""The frozen-feature probe (model_build/feature_probe.py) on synthetic features.

Proves that it holds each source out in turn with and without the mask views, never trains on the held-out
source, scores lesion-centred views nowhere, and reports normals only where a source has enough of them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from model_build.data import LoadedData, Sample
from model_build.feature_probe import probe, table


def test_probe_holds_each_source_out_with_and_without_views() -> None:
    rng = np.random.default_rng(0)
    samples, feats = [], []
    centre = {"normal": 0.0, "benign": 2.0, "malignant": 4.0}
    for source in ("a", "b", "c"):
        for label in ("normal", "benign", "malignant"):
            for i in range(15):
                view = "lesion_free" if (label == "normal" and source != "a") else "full"
                samples.append(Sample(Path(f"/{source}/{label}{i}.png"), label, source, view=view))
                feats.append(rng.normal(centre[label], 1.0, 8))
        samples.append(Sample(Path(f"/{source}/m.png"), "malignant", source, view="lesion_centred"))
        feats.append(rng.normal(4.0, 1.0, 8))
    data = LoadedData(samples, np.zeros((len(samples), 4, 4), np.uint8), ("normal", "benign", "malignant"))
    rows = probe(data, np.array(feats))
    assert [(r.held_out, r.recipe) for r in rows] == [(s, rcp) for s in "abc" for rcp in ("images only", "with views")]
    for r in rows:
        assert r.malignant_auc_lesions > 0.9
    by = {(r.held_out, r.recipe): r for r in rows}
    assert by[("a", "with views")].normals_top_normal is not None and by[("a", "images only")].normal_views_top_normal is None
    assert by[("b", "images only")].normals_top_normal is None and by[("b", "images only")].normal_views_top_normal is not None
    # training sizes: images only excludes views of the other sources; with views includes them (and centred views)
    assert by[("a", "with views")].n_train == by[("a", "images only")].n_train + 2 * 15 + 2
    assert len(table(rows)) == 2 + len(rows)
