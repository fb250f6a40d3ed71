"""The clinical loop on real chest X-rays: does retraining on clinicians' corrections help on new
patients, and what do the gate and the monitor say about it?

Version A is the `lite0-xray` recipe, trained on the train split (model selection on val). The
test split's patients play the new patients who arrive after deployment, in two halves by patient
(2-fold): in fold f, A serves half f through the real service (`create_app`, in process), a
"clinician" (the true label) gives feedback on every case, `cnnlab feedback export` turns it into a
class folder, and version B_f is the same recipe trained again with `--extra-data` of that folder.
B_f then runs in shadow beside A on the other half, so both answer every one of those patients and
their live accuracies in `/v1/monitor` are paired; the gate compares B_f with A on the val split
(labelled patients no model trained on, though both chose their epoch by it), and a 50% canary
asks the service to run that gate itself. Nothing here is chosen by the test split: it only plays
the stream of new patients, and every image is judged by a model that never trained on it. (B's own
model card scores B on the whole test split, half of which it trained on: those figures are not
used here. The service's patient key is its own, so `--extra-data` cannot match the export's hashed
ids to the source's raw ones, and says so.)

    python bench/clinical_loop.py                       # about 6 minutes on 2 CPU cores
    python bench/clinical_loop.py --quick --out /tmp/loop   # the pipeline in a minute, figures meaningless
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
import tempfile
import time
from collections import defaultdict
from math import comb
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient

from cnnlab.config import load_config
from cnnlab.fileio import atomic_write_json, atomic_write_text
from cnnlab.serve.app import create_app
from cnnlab.serve.export import export_feedback
from cnnlab.serve.security import Role, create_key
from cnnlab.serve.settings import ServeSettings
from cnnlab.serve.store import ShadowRow
from cnnlab.tasks.gate import gate
from cnnlab.tasks.train import train

ROOT = Path(__file__).resolve().parents[1]
XRAYS = ROOT.parent / "shared" / "data" / "chest-xray"
RECIPE = "lite0-xray"
QUICK = {"data.input_size": 96, "train.epochs": 1, "data.limit_train": 60}


def case_folder(rows: list[dict[str, str]], out: Path) -> Path:
    """The images of `rows` (metadata.csv rows of chest-xray) as a class folder with their patients and sources."""
    kept = []
    for row in rows:
        target = out / row["label"] / Path(row["file"]).name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(XRAYS / row["file"], target)
        kept.append({"file": f"{row['label']}/{target.name}", "label": row["label"],
                     "patient_id": row["patient_id"], "source": row["source"]})  # fmt: skip
    with (out / "metadata.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["file", "label", "patient_id", "source"])
        writer.writeheader()
        writer.writerows(kept)
    return out


def halves_by_patient(rows: list[dict[str, str]], seed: int) -> list[list[dict[str, str]]]:
    """The rows in two halves with no patient in both, each class spread over both."""
    import numpy as np

    patients = sorted({(r["label"], r["patient_id"]) for r in rows})
    order = np.random.default_rng(seed).permutation(len(patients))
    side = {}
    counts: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for i in order:
        label, patient = patients[i]
        if patient in side:
            continue
        half = int(counts[label][1] < counts[label][0])
        side[patient] = half
        counts[label][half] += 1
    return [[r for r in rows if side[r["patient_id"]] == h] for h in (0, 1)]


def train_version(out: Path, extra: Path | None, quick: bool, seed: int) -> Path:
    values: dict[str, Any] = {"train.seed": seed, **(QUICK if quick else {})}
    if extra is not None:
        values["data.extra"] = (str(extra),)
    started = time.perf_counter()
    train(load_config(RECIPE, values=values), out)
    print(f"  trained {out.name} in {time.perf_counter() - started:.0f} s", flush=True)
    return out


def serve_stream(client: TestClient, keys: dict[str, str], rows: list[dict[str, str]]) -> list[dict[str, Any]]:
    """Each image to /v1/predict with its patient id, then the clinician's label as feedback."""
    answers = []
    for row in rows:
        with (XRAYS / row["file"]).open("rb") as f:
            image = {"file": ("x.png", f.read(), "image/png")}
        r = client.post("/v1/predict", files=image, data={"patient_id": row["patient_id"]},
                        headers={"X-API-Key": keys["clinician"]})  # fmt: skip
        r.raise_for_status()
        answer = r.json()
        fb = client.post("/v1/feedback", json={"request_id": answer["request_id"], "label": row["label"]},
                         headers={"X-API-Key": keys["clinician"]})  # fmt: skip
        fb.raise_for_status()
        answers.append({**answer, "truth": row["label"], "source": row["source"]})
    return answers


def service(runs: list[Path], state: Path, gate_data: Path) -> TestClient:
    settings = ServeSettings(
        runs=runs, state_dir=state, gate_data=gate_data, rate_limit_per_minute=0, gate_resamples=1000
    )
    return TestClient(create_app(settings))


def mcnemar_p(b: int, c: int) -> float:
    """Exact two-sided McNemar test on the discordant pairs (b: only A right, c: only B right)."""
    n = b + c
    if n == 0:
        return 1.0
    tail = sum(comb(n, k) for k in range(min(b, c) + 1)) / 2**n
    return min(1.0, 2 * tail)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "loop")
    parser.add_argument("--quick", action="store_true", help="tiny training, to check the pipeline")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rows = list(csv.DictReader((XRAYS / "metadata.csv").open()))
    test_rows = [r for r in rows if r["split"] == "test"]
    work = Path(tempfile.mkdtemp(prefix="cnnlab-loop-"))
    started = time.perf_counter()
    print(f"working in {work}", flush=True)
    gate_data = case_folder([r for r in rows if r["split"] == "val"], work / "gate")
    a = train_version(work / "a", None, args.quick, args.seed)
    halves = halves_by_patient(test_rows, args.seed)
    folds = []
    for f in (0, 1):
        print(f"fold {f}: A serves {len(halves[f])} images, B_{f} trains on their feedback", flush=True)
        state = work / f"state-{f}"
        with service([a], state, gate_data) as client:
            store = client.app.state.store
            keys = {role.name: create_key(store, role, f"bench-{role.name}")[1] for role in Role}
            served = serve_stream(client, keys, halves[f])
            feedback = work / f"feedback-{f}"
            written, _missing = export_feedback(store, client.app.state.settings.images_dir, feedback)
        b = train_version(work / f"b{f}", feedback, args.quick, args.seed)
        report = gate(b, a, gate_data, progress=False).to_dict()
        print(f"  gate B_{f} vs A on val: {'PASSED' if report['passed'] else 'REFUSED'}", flush=True)
        with service([a, b], state, gate_data) as client:
            store = client.app.state.store
            admin = {"X-API-Key": keys["admin"]}
            b_version = json.loads((b / "model.json").read_text())["weights_sha256"][:12]
            shadow = client.post("/v1/models/lite0-xray/rollout", json={"version": b_version, "mode": "shadow"},
                                 headers=admin)  # fmt: skip
            shadow.raise_for_status()
            live = serve_stream(client, keys, halves[1 - f])
            monitor = client.get("/v1/monitor", headers=admin).json()
            with store.sessions() as s:
                shadow_labels = {r.request_id: r.label for r in s.query(ShadowRow).all()}
            half = {"version": b_version, "mode": "canary", "fraction": 0.5}
            canary = client.post("/v1/models/lite0-xray/rollout", json=half, headers=admin)
        folds.append({
            "fold": f, "feedback_images": written, "feedback_served": len(served), "live_images": len(live),
            "gate": report, "service_canary_status": canary.status_code,
            "service_canary": canary.json().get("detail") if canary.status_code != 200 else "started",
            "monitor_versions": monitor["versions"], "alerts": monitor["alerts"], "validation": monitor["validation"],
            "cases": [{"truth": c["truth"], "source": c["source"], "a": c["label"],
                       "b": shadow_labels.get(c["request_id"])} for c in live],
        })  # fmt: skip
    results = summarise(folds, time.perf_counter() - started, args.quick)
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(args.out / "results.json", results)
    atomic_write_text(args.out / "README.md", render(results))
    print(render(results))
    shutil.rmtree(work, ignore_errors=True)


def summarise(folds: list[dict[str, Any]], seconds: float, quick: bool) -> dict[str, Any]:
    cases = [c for fold in folds for c in fold["cases"]]
    by_source: dict[str, dict[str, int]] = defaultdict(lambda: {"n": 0, "a": 0, "b": 0})
    for c in cases:
        for key in ("all", c["source"]):
            by_source[key]["n"] += 1
            by_source[key]["a"] += c["a"] == c["truth"]
            by_source[key]["b"] += c["b"] == c["truth"]
    only_a = sum(c["a"] == c["truth"] != c["b"] for c in cases)
    only_b = sum(c["b"] == c["truth"] != c["a"] for c in cases)
    return {
        "command": "python bench/clinical_loop.py" + (" --quick" if quick else ""),
        "seconds": round(seconds, 1),
        "quick": quick,
        "accuracy": {k: v for k, v in sorted(by_source.items())},
        "discordant": {"only_a_right": only_a, "only_b_right": only_b, "mcnemar_p": mcnemar_p(only_a, only_b)},
        "folds": [{k: v for k, v in fold.items() if k != "cases"} for fold in folds],
    }


def render(r: dict[str, Any]) -> str:
    def pct(k: int, n: int) -> str:
        return f"{k / n:.1%} ({k}/{n})" if n else "-"

    lines = [
        "# The clinical loop on real chest X-rays",
        "",
        f"Made by `{r['command']}` in {r['seconds']:.0f} s"
        + (" (QUICK: tiny training, figures meaningless)." if r["quick"] else "."),
        "",
        "Version A: the `lite0-xray` recipe on the train split. The test split's patients play the new patients,",
        "in two halves by patient: A serves one half, a clinician (the true label) corrects it through",
        "`/v1/feedback`, `cnnlab feedback export` writes the folder and B is trained again with `--extra-data`;",
        "B then answers the other half in shadow beside A. Every image below is judged by A and by a B that",
        "never trained on it.",
        "",
        "| patients from | images | A (no feedback) | B (with the other half's feedback) |",
        "|---|---|---|---|",
    ]
    for source, v in r["accuracy"].items():
        lines.append(f"| {source} | {v['n']} | {pct(v['a'], v['n'])} | {pct(v['b'], v['n'])} |")
    d = r["discordant"]
    lines += [
        "",
        f"Paired: {d['only_a_right']} images only A got right, {d['only_b_right']} only B; exact McNemar p = "
        f"{d['mcnemar_p']:.3f}" + (" (no difference shown at this size)." if d["mcnemar_p"] >= 0.05 else "."),
        "",
        "| fold | feedback images | gate on val (B vs A) | the service's 50% canary "
        "| the monitor's live accuracy: A (every case it served) / B (in shadow) | alerts |",
        "|---|---|---|---|---|---|",
    ]
    for fold in r["folds"]:
        g = fold["gate"]
        verdict = "passed" if g["passed"] else "refused: " + "; ".join(g["reasons"])
        rows = {v["role"]: v for v in fold["monitor_versions"]}
        live = " / ".join(
            f"{rows[role]['live_accuracy']:.1%}" if rows.get(role, {}).get("live_accuracy") is not None else "-"
            for role in ("active", "shadow")
        )
        canary = (
            "started (gate passed)"
            if fold["service_canary_status"] == 200
            else f"refused ({fold['service_canary_status']})"
        )
        lines.append(f"| {fold['fold']} | {fold['feedback_images']} | {verdict} | {canary} | {live} | "
                     f"{len(fold['alerts'])} |")  # fmt: skip
    gate_rows = r["folds"][0]["gate"]["gate"]["metrics"]
    lines += ["", "The gate's figures, fold 0 (candidate - active, 95% paired-bootstrap interval by patient):", ""]
    lines += ["| metric | B | A | difference | 95% CI | margin | verdict |", "|---|---|---|---|---|---|---|"]
    for m in gate_rows:
        verdict = "pass" if m["passed"] else "fail"
        lines.append(f"| {m['label']} | {m['candidate']:.3f} | {m['active']:.3f} | {m['difference']:+.3f} | "
                     f"{m['ci'][0]:+.3f} to {m['ci'][1]:+.3f} | {m['margin']} | {verdict} |")  # fmt: skip
    lines += [
        "",
        "Read with care: about 36 new patients per half, from the same three sources as training. The figures say",
        "whether the loop's machinery does what it claims on real images (feedback reaches training, the gate and the",
        "monitor compare versions on patients they never saw), not that feedback retraining helps in general.",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
