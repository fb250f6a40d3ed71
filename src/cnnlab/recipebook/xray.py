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
from cnnlab.evaluation.report import Figure, Section, Table, fmt, with_interval
from cnnlab.figures import plot_labelled_images
from cnnlab.recipebook.core import Answer, Context, pct, recipe, train_recipe, training_sections
from cnnlab.tasks.calibrate import calibrate
from cnnlab.tasks.crossval import CROSSVAL_METRICS, crossval
from cnnlab.tasks.evaluate import evaluate
from cnnlab.tasks.explain import explain_files
from cnnlab.tasks.export import export_model

POSITIVE = "not normal"
TARGET_SENSITIVITY = 0.95
"""Missing a sick patient costs more than a second look at a healthy one: the operating point keeps
the sensitivity for "not normal" (pneumonia or COVID-19) at this level on validation."""
TRAINING_PARTS = ("Result", "Training time per stage", "Curves and the fit verdict")
"""The parts of the training answer this pipeline repeats (the data has its own section here)."""
QUICK = {"data.limit_train": 60, "data.input_size": 128, "train.epochs": 1}


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


def _crossval(ctx: Context, cfg: Any) -> tuple[Section, dict[str, Any]]:
    ctx.step(f"{ctx.folds}-fold cross-validation by patient")
    cv = crossval(cfg, ctx.folds, ctx.out / "crossval", group_by="patient_id", overwrite=True, console=ctx.console)
    rows = [[m, f"{cv.mean[m]:.4f} ± {cv.std[m]:.4f}"] for m in CROSSVAL_METRICS]
    text = [
        f"{cv.folds} folds split by {cv.unit}; each fold trains on the others and is scored on its own test part. "
        "Out-of-fold predictions are in crossval/oof_predictions.csv.",
        Table(["metric", "mean ± std over folds"], rows),
    ]
    return Section("Cross-validation", text), {"crossval": {"mean": cv.mean, "std": cv.std, "folds": cv.folds}}


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
    return Section("5. Explanations", text), {"gradcam_images": len(done)}


def _calibration_reading(val: dict[str, dict[str, float]]) -> str:
    """What the validation figures say about the fit, read from the figures themselves."""
    before, after = val["before"], val["after"]
    if after["ece"] <= before["ece"]:
        return (
            f"On validation, where it was fitted, the expected calibration error fell from {pct(before['ece'])} "
            f"to {pct(after['ece'])}: the stated probabilities now match how often the model is right."
        )
    reading = (
        f"On validation the expected calibration error rose from {pct(before['ece'])} to {pct(after['ece'])}"
        f" while the log loss went {'down' if after['nll'] < before['nll'] else 'up'} "
        f"({fmt(before['nll'])} -> {fmt(after['nll'])}). "
    )
    return reading + (
        "Temperature scaling minimises the log loss, not ECE; on a small validation split ECE's 15 bins hold "
        "a handful of images each, so one image can move it by points (the diagram shows the counts). "
        "`cnnlab calibrate RUN --method vector` fits a per-class scale and bias instead."
    )


@recipe(
    "xray-triage",
    "000 Q10 / 002 A10",
    "Chest X-ray triage: normal, pneumonia, COVID-19, from data to deployment",
    "Classify chest X-rays into normal, pneumonia and COVID-19 with limited labelled data: transfer learning, "
    "class imbalance, patient-level splits, clinically relevant metrics, calibration, Grad-CAM, export, serving "
    "and a clinician UI with feedback.",
    data="chest-xray",
    takes_folds=True,
)
def xray_triage(ctx: Context) -> Answer:
    sections, results = [], {}
    section, found = _inspect(ctx)
    sections.append(section)
    results["data"] = found

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
                "augmentation without flips, a frozen base with a new head, then the top blocks fine-tuned.",
                *[b for s in train_sections if s.title in TRAINING_PARTS for b in s.blocks],
            ],
        )
    )
    if ctx.folds:
        section, found = _crossval(ctx, cfg)
        sections.append(section)
        results.update(found)

    ctx.step("calibrating and choosing the operating point")
    cal = calibrate(run_dir, "temperature", positive=POSITIVE, target_sensitivity=TARGET_SENSITIVITY)
    ece = {split: {when: cal.scores[split][when]["ece"] for when in ("before", "after")} for split in cal.scores}
    results["ece"] = ece
    results["temperature"] = cal.calibration.temperature if cal.calibration else None
    sections.append(
        Section(
            "3. Calibration",
            [
                f"Temperature scaling fitted on the validation split: T = {fmt(results['temperature'], 3)}.",
                Table(
                    ["split", "ECE before", "ECE after", "NLL before", "NLL after"],
                    [
                        [
                            split,
                            pct(s["before"]["ece"]),
                            pct(s["after"]["ece"]),
                            fmt(s["before"]["nll"]),
                            fmt(s["after"]["nll"]),
                        ]
                        for split, s in cal.scores.items()
                    ],
                ),
                Figure(cal.figure, "reliability diagrams before and after calibration"),
                _calibration_reading(cal.scores["val"]),
            ],
        )
    )

    ctx.step("evaluating on the test split")
    ev = evaluate(run_dir, "test", resamples=200 if ctx.quick else 1000)
    m = ev.metrics
    intervals = m["intervals"]
    auc = m["averages"]["macro"]["roc_auc"]
    op = m["operating_point"]
    test_point = op["test"]
    results["test"] = {
        "accuracy": m["accuracy"],
        "macro_roc_auc": auc,
        "macro_roc_auc_ci": intervals.get("macro_roc_auc"),
        "operating_point": op["point"]["value"],
        "sensitivity": test_point["sensitivity"],
        "specificity": test_point["specificity"],
        "sensitivity_ci": op["test_intervals"]["sensitivity"],
        "specificity_ci": op["test_intervals"]["specificity"],
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
    sections.append(
        Section(
            "4. Clinical metrics on the test split",
            [
                f"{m['images']} test images; 95% intervals from {intervals['resamples']} bootstrap resamples by "
                f"{intervals['unit']}.",
                f"Macro ROC AUC {with_interval(auc, intervals.get('macro_roc_auc'))}; accuracy "
                f"{with_interval(m['accuracy'], intervals.get('accuracy'))}; balanced accuracy "
                f"{fmt(m['balanced_accuracy'])}.",
                Table(["class", "sensitivity", "specificity", "ROC AUC"], per_class),
                f"Operating point for '{POSITIVE}' (pneumonia or COVID-19): threshold {fmt(op['point']['value'])} "
                f"on the summed probability, chosen on validation to keep sensitivity at least "
                f"{TARGET_SENSITIVITY:.0%}. On test: sensitivity "
                f"{with_interval(test_point['sensitivity'], op['test_intervals']['sensitivity'])}, specificity "
                f"{with_interval(test_point['specificity'], op['test_intervals']['specificity'])}, PPV "
                f"{with_interval(test_point['ppv'], op['test_intervals']['ppv'])}, NPV "
                f"{with_interval(test_point['npv'], op['test_intervals']['npv'])}.",
                Figure(ev.out_dir / "confusion_matrix.png", "confusion matrix (counts and row-normalised)"),
                f"The full report (ROC and PR curves, the most confident mistakes): "
                f"{(ev.out_dir / 'report.html').relative_to(ctx.out).as_posix()}.",
            ],
        )
    )

    section, found = _gradcam(ctx, run_dir)
    sections.append(section)
    results.update(found)

    ctx.step("exporting to ONNX")
    onnx_path, parity = export_model(run_dir, "onnx", samples=64 if ctx.quick else 256)
    results["export"] = {
        "path": onnx_path.relative_to(ctx.out).as_posix(),
        "max_abs_diff": parity.max_abs_diff,
        "top1_agreement": parity.top1_agreement,
        "passed": parity.passed,
    }
    sections.append(
        Section(
            "6. Export",
            [
                f"ONNX model: {results['export']['path']}. Parity with PyTorch on {parity.samples} test images: "
                f"largest probability difference {parity.max_abs_diff:.2e} (tolerance {parity.tolerance:.0e}), "
                f"top-1 agreement {pct(parity.top1_agreement)}: {'passed' if parity.passed else 'FAILED'}.",
            ],
        )
    )
    run = run_dir.as_posix()
    state = (ctx.out / "serve-state").as_posix()
    sections.append(
        Section(
            "7. Deploy",
            [
                "Serve the calibrated model (API keys, audit log, review queue, drift monitor), create a clinician "
                "key, and open the clinician's page:",
                "```\n"
                f"cnnlab serve {run} --port 8000 --state-dir {state}\n"
                f"cnnlab keys create --role clinician --name dr-a --state-dir {state}\n"
                "cnnlab ui --api http://127.0.0.1:8000 --port 8501\n"
                "```",
                "Predictions below the review threshold, or near the operating point, go to the review queue; "
                "clinicians' labels are exported for retraining with `cnnlab feedback export`.",
            ],
        )
    )
    t = results["test"]
    summary = (
        f"Test macro ROC AUC {with_interval(auc, t['macro_roc_auc_ci'])}; for '{POSITIVE}' at the chosen operating "
        f"point, sensitivity {fmt(t['sensitivity'])} and specificity {fmt(t['specificity'])}; validation ECE "
        f"{pct(ece['val']['before'])} before and {pct(ece['val']['after'])} after calibration."
    )
    return Answer(summary, sections, results)
