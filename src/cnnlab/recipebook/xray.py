"""000 Q10 / 002 answer 10: chest X-ray triage from the data to the clinician's browser."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from cnnlab.bundle.classifier import load
from cnnlab.config import DataConfig
from cnnlab.data.inspect import inspect_source
from cnnlab.data.sources import locate
from cnnlab.evaluation.by_source import per_source_metrics
from cnnlab.evaluation.report import Figure, Section, Table, fmt, with_interval
from cnnlab.figures import plot_labelled_images
from cnnlab.recipebook.core import Answer, Context, pct, recipe, train_recipe, training_sections
from cnnlab.recipebook.xray_checks import (
    leave_one_source_out_section,
    probe_and_cam_section,
    shortcut_reading,
    source_counts,
    source_table,
)
from cnnlab.tasks.calibrate import calibrate
from cnnlab.tasks.crossval import CROSSVAL_METRICS, crossval
from cnnlab.tasks.evaluate import evaluate
from cnnlab.tasks.explain import explain_files
from cnnlab.tasks.export import export_model
from cnnlab.tasks.out_of_fold import load_out_of_fold

POSITIVE = "not normal"
TARGET_SENSITIVITY = 0.95
"""Missing a sick patient costs more than a second look at a healthy one: the operating point keeps
the sensitivity for "not normal" (pneumonia or COVID-19) at this level on validation."""
TRAINING_PARTS = ("Result", "Training time per stage", "Curves and the fit verdict")
"""The parts of the training answer this pipeline repeats (the data has its own section here)."""
QUICK = {"data.limit_train": 60, "data.input_size": 128, "train.epochs": 1}


def _views_sentence(views: tuple[float, ...]) -> str:
    if not views:
        return ""
    crops = ", ".join("the image as given" if f >= 1 else f"its central {f:.0%}" for f in views)
    return (
        f" Every prediction averages the network's logits over {len(views)} views ({crops}; `model.tta`): on the "
        "out-of-fold images that lifted the ranking and the log loss (README, test-time views)."
    )


def _inspect(ctx: Context) -> tuple[Section, dict[str, Any]]:
    ctx.step("inspecting the data")
    report = inspect_source(DataConfig(source="chest-xray", data_dir=ctx.data_dir), ctx.out / "inspect")
    rows = [
        [cls, *(str(n) for n in splits.values()), str(sum(splits.values()))] for cls, splits in report.counts.items()
    ]
    splits = list(next(iter(report.counts.values())))
    blocks: list[Any] = [
        Table(["class", *splits, "all"], rows),
        f"Patients per split: {', '.join(f'{s} {n}' for s, n in (report.patients or {}).items())}; patients in more "
        f"than one split: {report.shared_patients}. The split is by patient (metadata.csv's patient_id), so no "
        "patient's images are both trained on and tested on.",
        f"Image sizes: {', '.join(f'{k} ({v})' for k, v in report.sizes.most_common(3))}; formats: "
        f"{', '.join(f'{k} ({v})' for k, v in report.modes.most_common(3))}; unreadable files excluded: "
        f"{len(report.bad)}; identical images across splits: {len(report.cross_split_duplicates)}.",
        Figure(report.grid, "training images per class"),
        "Caveat from the data's README: the classes come from different hospitals (covid19 from one adult "
        "hospital; normal and pneumonia half paediatric). A network can learn the source instead of the disease, "
        "so these figures support the pipeline, not a clinical claim.",
    ]
    results = {"counts": report.counts, "patients": report.patients, "shared_patients": report.shared_patients}
    return Section("1. The data", blocks), results


def _crossval(ctx: Context, cfg: Any) -> tuple[Section, dict[str, Any], Path]:
    ctx.step(f"{ctx.folds}-fold cross-validation by patient, and the ensemble of the folds")
    # Calibrated on the fold models' out-of-fold logits, not on `ensemble_oof`'s: on these data the
    # models that leave two folds out are weaker (three fifths of the data) and less confident, which
    # moves the threshold further from the deployed ensemble's than ensembling does (README).
    cv = crossval(cfg, ctx.folds, ctx.out / "crossval", group_by="patient_id", ensemble=True, overwrite=True,
                  console=ctx.console)  # fmt: skip
    assert cv.ensemble is not None
    rows = [[m, f"{cv.mean[m]:.4f} ± {cv.std[m]:.4f}"] for m in CROSSVAL_METRICS]
    members = cv.ensemble["members_accuracy"]
    text = [
        f"The training and validation images ({sum(r['images'] for r in cv.rows)}) are cut into {cv.folds} folds "
        f"by {cv.unit}; each fold's model trains on the others and is scored on its own part, so every image gets "
        "one prediction from a model that never saw its patient (crossval/oof_predictions.csv). The test split "
        "stays out of every fold.",
        Table(["metric", "mean ± std over folds"], rows),
        f"The deployed model is the ensemble of the {cv.folds} fold models (the mean of their logits): one bundle, "
        f"crossval/ensemble, that serves, explains and exports like any other. On the test split its accuracy is "
        f"{pct(cv.ensemble['accuracy'])} against {pct(min(members))}-{pct(max(members))} for its members alone.",
    ]
    found = {"crossval": {"mean": cv.mean, "std": cv.std, "folds": cv.folds, "ensemble": cv.ensemble}}
    return Section("3. Cross-validation and the ensemble", text), found, cv.out_dir


def _gradcam(ctx: Context, run_dir: Path) -> tuple[Section, dict[str, Any]]:
    ctx.step("Grad-CAM examples")
    root, _ = locate("chest-xray", ctx.data_dir)
    assert root is not None  # training just read it
    clf = load(run_dir)
    files = [p for cls in clf.classes for p in sorted((root / "test" / cls).glob("*.png"))[:2]]
    folder = ctx.out / "gradcam"
    done = [r for r in explain_files(clf, files, folder, "gradcam") if not r.error]
    images = [np.asarray(Image.open(r.overlay).convert("RGB")) for r in done]
    captions = [f"true {Path(r.path).parent.name}\npredicted {r.label} {r.probability:.2f}" for r in done]
    grid = ctx.path("gradcam.png")
    plot_labelled_images(images, captions, grid, "Grad-CAM: where the network looked (two test images per class)")
    right = sum(Path(r.path).parent.name == r.label for r in done)
    text = [
        Figure(grid, "Grad-CAM overlays on test X-rays, explaining the predicted class"),
        f"{right} of {len(done)} shown images are classified correctly. A map that lights up the lungs supports "
        "the prediction; one on the borders, labels or outside the chest points to a shortcut (the data's "
        "hospital differences) and should be checked with `cnnlab explain RUN FOLDER --faithfulness`.",
    ]
    return Section("7. Explanations", text), {"gradcam_images": len(done)}


def _calibration(ctx: Context, deployed: Path) -> tuple[Section, dict[str, Any]]:
    """Calibration and the operating point: `calibrate` fits an ensemble's on its folds' out-of-fold
    predictions (many more images than the validation split, which its members trained on) and
    reports it on test alone; a single model's on validation."""
    ctx.step("calibrating and choosing the operating point")
    cal = calibrate(deployed, "auto", positive=POSITIVE, target_sensitivity=TARGET_SENSITIVITY,
                    resamples=200 if ctx.quick else 1000)  # fmt: skip
    assert cal.choice is not None
    choice = cal.choice
    where = "the out-of-fold predictions" if cal.fitted_on == "out-of-fold" else "the validation split"
    shown = cal.scores
    nll = ", ".join(f"{m} {fmt(v)}" for m, v in choice.heldout_nll.items())
    blocks: list[Any] = [
        f"`cnnlab calibrate --method auto` fits none, temperature and vector scaling on {choice.images} images of "
        f"{where} in {choice.folds} parts by {choice.unit} and scores each on the part it did not see. Held-out "
        f"log loss: {nll}. Kept: **{choice.method}**"
        + (f" (T = {fmt(cal.calibration.temperature, 3)})" if cal.calibration and cal.calibration.temperature else "")
        + (f": {choice.reason}." if choice.reason else "."),
        Table(
            ["split", "ECE before [95% CI]", "ECE after [95% CI]", "NLL before", "NLL after"],
            [
                [
                    split,
                    f"{pct(v['before']['ece'])} [{pct(v['before']['ece_ci'][0])}, {pct(v['before']['ece_ci'][1])}]",
                    f"{pct(v['after']['ece'])} [{pct(v['after']['ece_ci'][0])}, {pct(v['after']['ece_ci'][1])}]",
                    fmt(v["before"]["nll"]),
                    fmt(v["after"]["nll"]),
                ]
                for split, v in shown.items()
            ],
        ),
        Figure(cal.figure, "reliability diagrams before and after calibration"),
        "A calibration that makes held-out log loss worse is refused, never stored; ECE's interval comes from "
        "resampling patients, and on 72 test images it is wide: read the diagram's counts.",
    ]
    point = cal.operating_point
    results: dict[str, Any] = {
        "calibration": {"method": choice.method, "heldout_nll": choice.heldout_nll, "fitted_on": cal.fitted_on},
        "ece": {split: {when: v[when]["ece"] for when in ("before", "after")} for split, v in cal.scores.items()},
    }
    if point is not None:
        ci = point.fit_intervals or {}
        rates = point.val or {}
        blocks.append(
            f"Operating point for '{POSITIVE}', chosen on {where}: threshold {fmt(point.value)} keeps sensitivity "
            f"{with_interval(rates.get('sensitivity'), ci.get('sensitivity'))} (target {TARGET_SENSITIVITY:.0%}) "
            f"at a specificity of {with_interval(rates.get('specificity'), ci.get('specificity'))}: the price of "
            "missing few sick patients is a second look at that share of the healthy ones."
        )
        results["operating_point_fit"] = {"value": point.value, "rates": rates, "intervals": ci}
        if cal.fitted_on == "out-of-fold":
            block, results["operating_point_fit"]["by_source"] = _point_by_source(deployed)
            blocks += block
    return Section("4. Calibration and the operating point", blocks), results


def _point_by_source(deployed: Path) -> tuple[list[Any], dict[str, Any] | None]:
    """The operating point's rates on the out-of-fold images of each source: where the pooled
    specificity comes from."""
    oof = load_out_of_fold(deployed)
    if oof.sources is None:
        return [], None
    clf = load(deployed)  # as calibrated: its card holds the threshold
    proba = clf.calibrated(oof.logits).numpy()
    found = per_source_metrics(oof.labels, proba, clf.classes, oof.sources, oof.groups, clf.card.threshold)
    spec = {source: r["operating_point"]["specificity"] for source, r in found["sources"].items()}
    auc = {source: r["roc_auc"].get("normal") for source, r in found["sources"].items() if r["counts"].get("normal")}
    rows = [[source, str(r["images"]), fmt(auc.get(source)), fmt(r["operating_point"]["sensitivity"]),
             fmt(spec[source])] for source, r in found["sources"].items()]  # fmt: skip
    hardest = min(auc, key=lambda k: auc[k]) if auc else None
    blocks: list[Any] = [
        f"The same operating point on each source's out-of-fold images ('normal' against '{POSITIVE}' within the "
        "source: no source shortcut can explain that ROC AUC):",
        Table(
            ["source", "images", f"ROC AUC normal vs {POSITIVE}, within", f"sensitivity {POSITIVE}", "specificity"],
            rows,
        ),
    ]
    if hardest is not None and len(auc) > 1:
        easiest = max(auc, key=lambda k: auc[k])
        blocks.append(
            f"The specificity the threshold costs is not spread evenly: {pct(spec[easiest])} of {easiest}'s healthy "
            f"images pass, {pct(spec[hardest])} of {hardest}'s, whose normal and pneumonia images the network "
            f"separates with ROC AUC {fmt(auc[hardest], 3)} against {fmt(auc[easiest], 3)}. Raising the pooled "
            f"specificity at 95% sensitivity means separating {hardest}'s normal and pneumonia radiographs better"
            + (": adults' radiographs, whose pneumonia images may carry co-labels such as infiltration (the data's "
               "README; NIH's labels were mined from the radiology reports)." if hardest == "nih" else ".")
        )  # fmt: skip
    return blocks, found


def _test_section(ctx: Context, deployed: Path, single: Path | None) -> tuple[Section, dict[str, Any]]:
    ctx.step("evaluating on the test split")
    ev = evaluate(deployed, "test", resamples=200 if ctx.quick else 1000)
    m = ev.metrics
    intervals = m["intervals"]
    auc = m["averages"]["macro"]["roc_auc"]
    op = m["operating_point"]
    test_point = op["test"]
    results: dict[str, Any] = {
        "accuracy": m["accuracy"],
        "macro_roc_auc": auc,
        "macro_roc_auc_ci": intervals.get("macro_roc_auc"),
        "roc_auc": {cls: v["roc_auc"] for cls, v in m["per_class"].items()},
        "operating_point": op["point"]["value"],
        "sensitivity": test_point["sensitivity"],
        "specificity": test_point["specificity"],
        "sensitivity_ci": op["test_intervals"]["sensitivity"],
        "specificity_ci": op["test_intervals"]["specificity"],
        "ece": (m["calibration"].get("calibrated") or m["calibration"]["raw"])["ece"],
        "by_source": m.get("by_source"),
    }
    per_class = [
        [
            cls,
            with_interval(v["recall"], intervals["per_class"][cls]["recall"]),
            with_interval(v["specificity"], intervals["per_class"][cls]["specificity"]),
            with_interval(v["roc_auc"], intervals["per_class"][cls]["roc_auc"]),
        ]
        for cls, v in m["per_class"].items()
    ]
    blocks: list[Any] = [
        f"{m['images']} test images of patients no model here trained on; 95% intervals from "
        f"{intervals['resamples']} bootstrap resamples by {intervals['unit']}.",
        f"Macro ROC AUC {with_interval(auc, intervals.get('macro_roc_auc'))}; accuracy "
        f"{with_interval(m['accuracy'], intervals.get('accuracy'))}; balanced accuracy "
        f"{fmt(m['balanced_accuracy'])}.",
        Table(["class", "sensitivity", "specificity", "ROC AUC"], per_class),
        f"At the stored operating point, '{POSITIVE}' (pneumonia or COVID-19) on test: sensitivity "
        f"{with_interval(test_point['sensitivity'], op['test_intervals']['sensitivity'])}, specificity "
        f"{with_interval(test_point['specificity'], op['test_intervals']['specificity'])}, PPV "
        f"{with_interval(test_point['ppv'], op['test_intervals']['ppv'])}, NPV "
        f"{with_interval(test_point['npv'], op['test_intervals']['npv'])}.",
    ]
    by_source = m.get("by_source")
    if by_source:
        rows = [
            [source, str(r["images"]), fmt(r["accuracy"]), fmt(r["within_source_auc"]),
             fmt((r.get("operating_point") or {}).get("sensitivity")),
             fmt((r.get("operating_point") or {}).get("specificity"))]
            for source, r in by_source["sources"].items()
        ]  # fmt: skip
        blocks += [
            "By source (hospital): the within-source AUC ranks one hospital's images against each other, "
            "where the hospital itself cannot help.",
            Table(
                [
                    "source",
                    "images",
                    "accuracy",
                    "within-source macro AUC",
                    f"'{POSITIVE}' sensitivity",
                    f"'{POSITIVE}' specificity",
                ],
                rows,
            ),
        ]
    if single is not None:
        alone = evaluate(single, "test", out=ctx.out / "run-eval", resamples=0).metrics
        results["single_model"] = {"accuracy": alone["accuracy"],
                                   "macro_roc_auc": alone["averages"]["macro"]["roc_auc"]}  # fmt: skip
        blocks.append(
            f"The single model of section 2, on the same images and uncalibrated: accuracy {pct(alone['accuracy'])}, "
            f"macro ROC AUC {fmt(alone['averages']['macro']['roc_auc'])}."
        )
    blocks += [
        Figure(ev.out_dir / "confusion_matrix.png", "confusion matrix (counts and row-normalised)"),
        f"The full report (ROC and PR curves, reliability, the most confident mistakes): "
        f"{(ev.out_dir / 'report.html').relative_to(ctx.out).as_posix()}.",
    ]
    return Section("5. Clinical metrics on the test split", blocks), results


@recipe(
    "xray-triage",
    "000 Q10 / 002 A10",
    "Chest X-ray triage: normal, pneumonia, COVID-19, from data to deployment",
    "Classify chest X-rays into normal, pneumonia and COVID-19 with limited labelled data: transfer learning, "
    "class imbalance, patient-level splits, clinically relevant metrics, calibration, Grad-CAM, export, serving "
    "and a clinician UI with feedback; evaluate on data from a different source.",
    data="chest-xray",
    takes_folds=True,
)
def xray_triage(ctx: Context) -> Answer:
    sections, results = [], {}
    section, found = _inspect(ctx)
    counts = source_counts(ctx)
    classes = sorted({c for per in counts.values() for c in per})
    section.blocks.insert(-1, source_table(counts, classes))
    sections.append(section)
    results["data"] = {**found, "sources": counts}

    cfg = ctx.config("lite0-xray", QUICK)
    run_dir = train_recipe(ctx, cfg)
    train_sections, trained, _card = training_sections(run_dir, "EfficientNet-Lite0 (ImageNet) with class weights")
    results["training"] = trained
    sections.append(
        Section(
            "2. Transfer learning",
            [
                "An ImageNet EfficientNet-Lite0 (grey X-rays through RGB kernels summed), class weights for the "
                "imbalance (`optim.class_weights: auto`; `--set optim.loss=focal` for focal loss), X-ray "
                "augmentation without flips, a frozen base with a new head, then the top blocks fine-tuned; the "
                "kept epoch is the one with the best validation ROC AUC (`train.monitor: val_auc`)."
                + _views_sentence(cfg.model.tta),
                *[b for s in train_sections if s.title in TRAINING_PARTS for b in s.blocks],
            ],
        )
    )
    deployed = run_dir
    if ctx.folds:
        section, found, crossval_dir = _crossval(ctx, cfg)
        sections.append(section)
        results.update(found)
        deployed = crossval_dir / "ensemble"
    results["deployed"] = deployed.relative_to(ctx.out).as_posix()

    section, found = _calibration(ctx, deployed)
    sections.append(section)
    results.update(found)

    section, results["test"] = _test_section(ctx, deployed, run_dir if deployed != run_dir else None)
    sections.append(section)

    blocks, results["loso"] = leave_one_source_out_section(ctx, cfg)
    more, results["shortcuts"] = probe_and_cam_section(ctx, run_dir)
    reading = shortcut_reading(results, counts, results["test"]["roc_auc"])
    sections.append(Section("6. Shortcuts: is it the disease or the hospital?", [*blocks, *more, reading]))

    section, found = _gradcam(ctx, deployed)
    sections.append(section)
    results.update(found)

    ctx.step("exporting to ONNX")
    onnx_path, parity = export_model(deployed, "onnx", samples=64 if ctx.quick else 256)
    results["export"] = {
        "path": onnx_path.relative_to(ctx.out).as_posix(),
        "max_abs_diff": parity.max_abs_diff,
        "top1_agreement": parity.top1_agreement,
        "passed": parity.passed,
    }
    sections.append(
        Section(
            "8. Export",
            [
                f"ONNX model: {results['export']['path']}. Parity with PyTorch on {parity.samples} test images: "
                f"largest probability difference {parity.max_abs_diff:.2e} (tolerance {parity.tolerance:.0e}), "
                f"top-1 agreement {pct(parity.top1_agreement)}: {'passed' if parity.passed else 'FAILED'}.",
            ],
        )
    )
    run = deployed.as_posix()
    state = (ctx.out / "serve-state").as_posix()
    sections.append(
        Section(
            "9. Deploy",
            [
                "Serve the calibrated model (API keys, audit log, review queue, drift monitor), create a clinician "
                "key, and open the clinician's page:",
                "```\n"
                f"cnnlab serve {run} --port 8000 --state-dir {state}\n"
                f"cnnlab keys create --role clinician --name dr-a --state-dir {state}\n"
                "cnnlab ui --api http://127.0.0.1:8000 --port 8501\n"
                "```",
                "Predictions below the review threshold, or near the operating point, go to the review queue; "
                "clinicians' labels are exported for retraining with `cnnlab feedback export`. Before trusting it at "
                "another hospital, score a labelled sample from there: `cnnlab evaluate "
                f"{run} --data-dir FOLDER` (any class folder; per-source figures when its metadata.csv has a "
                "source column).",
            ],
        )
    )
    t = results["test"]
    summary = (
        f"Deployed: {'the ensemble of the ' + str(ctx.folds) + ' fold models' if ctx.folds else 'the single model'}. "
        f"Test macro ROC AUC {with_interval(t['macro_roc_auc'], t['macro_roc_auc_ci'])}; for '{POSITIVE}' at the "
        f"stored operating point, sensitivity {fmt(t['sensitivity'])} and specificity {fmt(t['specificity'])}; "
        f"test ECE {pct(t['ece'])} ({results['calibration']['method']} calibration). Leave-one-source-out "
        + "; ".join(f"{r['source']} {fmt(r['macro_roc_auc'], 3)}" for r in results["loso"]["rows"])
        + " within-source macro AUC: the figure to expect at a hospital this model never saw."
    )
    return Answer(summary, sections, results)
