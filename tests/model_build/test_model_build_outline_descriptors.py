"""``model_build descriptors --segmentation DIR`` measures the descriptors on a segmentation model's own outlines of
its held-out lexicon lesions and writes the bundle's display rule (``segmentation.descriptors``) into its
``segmentation.json``, which ``pack-segmentation`` carries into the bundle: on the trained model (real data) the
rule reproduces the committed one and shows no descriptor; a bad call names its problem and writes nothing."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

from device.model.bundle import SegmentationSpec, load_bundle
from model_build.outline_descriptors import DISPLAY_MIN_KAPPA
from model_build.segmentation_build import pack_segmentation
from tests.conftest import REPO, TRAINED_SEGMENTATION


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "model_build", "descriptors", *args], cwd=REPO, capture_output=True, text=True, timeout=600)


def test_the_trained_models_rule_is_measured_written_and_packed(datasets: Path, classifier_bundle_dir: Path, tmp_path: Path) -> None:
    seg = tmp_path / "seg"
    shutil.copytree(TRAINED_SEGMENTATION, seg)
    committed = SegmentationSpec.from_dict(json.loads((seg / "segmentation.json").read_text())).descriptors
    data = json.loads((seg / "segmentation.json").read_text())
    del data["descriptors"]
    (seg / "segmentation.json").write_text(json.dumps(data))

    proc = _run("--data", str(datasets / "breast-lesions-usg"), "--segmentation", str(seg), "--bootstrap", "1000", "--write")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "| shape |" in proc.stdout and "| orientation | — | — | no (not in the lexicon) |" in proc.stdout
    assert "descriptors written (shown: none)" in proc.stdout
    rule = SegmentationSpec.from_dict(json.loads((seg / "segmentation.json").read_text())).descriptors
    assert rule == committed and rule is not None and rule.min_kappa == DISPLAY_MIN_KAPPA
    assert set(rule.kappa) == {"shape", "margin"} and all(f.n >= 40 for f in rule.kappa.values())

    packed = pack_segmentation(classifier_bundle_dir, seg, tmp_path / "bundle")
    assert load_bundle(packed.path).manifest.segmentation.descriptors == rule  # type: ignore[union-attr]
    assert packed.manifest.format_version == 6 and packed.manifest.segmentation.shown_descriptors() == frozenset()  # type: ignore[union-attr]


def test_bad_calls_name_the_problem_and_write_nothing(tmp_path: Path) -> None:
    lexicon = tmp_path / "lexicon"
    lexicon.mkdir()
    proc = _run("--data", str(lexicon), "--write")
    assert proc.returncode == 2 and "--write needs --segmentation" in proc.stderr
    seg = tmp_path / "seg"
    shutil.copytree(TRAINED_SEGMENTATION, seg, ignore=shutil.ignore_patterns("report"))
    before = (seg / "segmentation.json").read_bytes()
    proc = _run("--data", str(lexicon), "--segmentation", str(seg), "--write")
    assert proc.returncode == 2 and f"{seg}: no report/split.csv" in proc.stderr
    assert (seg / "segmentation.json").read_bytes() == before


def test_a_folder_without_the_lexicon_is_named(tmp_path: Path) -> None:
    seg = tmp_path / "seg"
    shutil.copytree(TRAINED_SEGMENTATION, seg)
    proc = _run("--data", str(tmp_path / "empty"), "--segmentation", str(seg))
    assert proc.returncode == 2 and f"{tmp_path / 'empty'}: no labels.csv" in proc.stderr
