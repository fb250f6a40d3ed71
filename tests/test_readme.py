"""Every `cnnlab ...` line of the README's bash blocks runs as printed.

The cheap ones run here, in a working directory laid out as the README assumes (`runs/demo` from
`cnnlab demo`, `../shared/data` beside it); every other line is in SKIPPED with the reason, and a
test checks each skipped line is still in the README, so the list cannot go stale. A new README
line runs by default: it passes here or it is added to SKIPPED on purpose. Every command a line
shows also answers `--help`, skipped or not."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from tests.conftest import SHARED_DATA
from tests.test_cli import run_cli

README = Path(__file__).resolve().parents[1] / "README.md"

TRAINS = "trains for minutes (the test suite trains its recipes at --quick size elsewhere)"
SERVES = "starts a server that runs until stopped (tests/serve and tests/ui start real ones)"
LOOP = "a step of the loop on the user's bundles (tests/e2e/test_clinical_loop.py runs the loop for real)"
SKIPPED: dict[str, str] = {
    "cnnlab recipe run lenet5-mnist": TRAINS,
    "cnnlab recipe run xray-triage --folds 5": TRAINS,
    "cnnlab recipe run alexnet-filters --quick --out /tmp/q8 --seed 3": "writes outside the working directory",
    "cnnlab train lenet5-mnist": TRAINS,
    "cnnlab train lenet5-fashion-mnist-fast": TRAINS,
    "cnnlab train simple-cnn-fashion-mnist-fast": TRAINS,
    "cnnlab train vgg-mini-cifar10 --device cuda": "needs a CUDA GPU (tests/engine/test_device.py checks the refusal)",
    "cnnlab evaluate runs/vgg-mini-cifar10 --device cpu": "reads the bundle the line above trains on a GPU",
    "cnnlab train lenet5-fashion-mnist": TRAINS,
    "cnnlab train simple-cnn-mnist": TRAINS,
    "cnnlab train vgg-mini-cifar10": TRAINS,
    "cnnlab train --model simple_cnn_torch --data mnist-sample --epochs 3": TRAINS,
    "cnnlab train lenet5-mnist --set optim.schedule=cosine --set train.early_stopping=3 --out runs/cos": TRAINS,
    "cnnlab train lenet5-mnist --out runs/cos --resume": "continues a killed run of the line before",
    "cnnlab evaluate runs/lite0-xray": "needs the lite0-xray bundle (cnnlab train lite0-xray)",
    "cnnlab calibrate runs/lite0-xray --positive 'not normal' --target-sensitivity 0.95": "needs the lite0-xray bundle",
    "cnnlab crossval lite0-xray --folds 5 --group-by patient_id": TRAINS,
    "cnnlab crossval lite0-xray --folds 5 --ensemble": TRAINS,
    "cnnlab crossval lite0-xray --folds 5 --ensemble --ensemble-oof": TRAINS,
    "cnnlab crossval lite0-xray --by-source": TRAINS,
    "cnnlab evaluate runs/lite0-xray --data-dir ~/xrays-other-hospital": "reads a folder from another hospital",
    "cnnlab shortcuts runs/lite0-xray": "needs the lite0-xray bundle",
    "cnnlab train --model simple_cnn --data folder:~/photos --set data.input_size=64 --class-weights auto": (
        "reads a folder of the user's own photos"
    ),
    "cnnlab train lite0-flowers": TRAINS,
    "cnnlab train lite0-flowers-scratch": TRAINS,
    "cnnlab compare runs/lite0-flowers runs/lite0-flowers-scratch": "needs the two lite0-flowers bundles",
    "cnnlab train lite0-xray": TRAINS,
    "cnnlab train vgg16-flowers": "trains for minutes, with torchvision's VGG16 checkpoint (a download)",
    "cnnlab export runs/lite0-flowers": "needs the lite0-flowers bundle",
    "cnnlab export runs/lite0-flowers --embed-preprocessing": "needs the lite0-flowers bundle",
    "cnnlab export runs/lite0-flowers --format torchscript": "needs the lite0-flowers bundle",
    "cnnlab predict runs/lite0-flowers ../shared/data/flowers/test --backend onnx --format csv": (
        "needs the lite0-flowers bundle and its export"
    ),
    "cnnlab train lenet5-fashion-mnist --nproc 2": TRAINS,
    "cnnlab train lenet5-fashion-mnist --find-lr": "decodes the full Fashion-MNIST",
    "cnnlab train lenet5-fashion-mnist --out runs/x --resume": "continues a killed run",
    "cnnlab explain runs/lite0-xray ../shared/data/chest-xray/test --faithfulness": "needs the lite0-xray bundle",
    "cnnlab serve runs/lite0-xray --port 8000 --state-dir serve-state": SERVES,
    "cnnlab serve runs/lite0-xray --ssl-certfile cert.pem --ssl-keyfile key.pem": SERVES,
    "cnnlab serve runs/lite0-xray --workers 4 --db postgresql+psycopg://cnnlab@dbhost/cnnlab": (
        "starts servers against a PostgreSQL host (tests/serve/test_postgres.py runs a real one)"
    ),
    "cnnlab keys revoke cnl_1a2b3c4d": "cnl_1a2b3c4d stands for an id that `cnnlab keys list` shows",
    "cnnlab ui --api http://127.0.0.1:8000 --port 8501": SERVES,
    "cnnlab purge --older-than 365 --yes": "deletes from a service's database (tests/serve/test_loop.py purges one)",
    "cnnlab serve runs/xray-v1 --gate-data data/xray-gate --state-dir serve-state": SERVES,
    "cnnlab feedback export --out data/feedback-1 --state-dir serve-state": LOOP,
    "cnnlab train lite0-xray --extra-data data/feedback-1 --out runs/xray-v2": TRAINS,
    "cnnlab gate runs/xray-v2 --against runs/xray-v1 --data data/xray-gate": LOOP,
    "cnnlab serve runs/xray-v1 runs/xray-v2 --gate-data data/xray-gate --state-dir serve-state": SERVES,
}


def readme_commands() -> list[str]:
    """Every `cnnlab ...` line of the README's bash blocks, without its comment, quoting normalised."""
    commands: list[str] = []
    for block in re.findall(r"^```bash\n(.*?)^```", README.read_text(), flags=re.S | re.M):
        for line in block.replace("\\\n", " ").splitlines():
            words = shlex.split(line, comments=True)
            command = " ".join(shlex.quote(w) if re.search(r"\s", w) else w for w in words)
            if words[:1] == ["cnnlab"] and command not in commands:
                commands.append(command)
    return commands


def command_words(command: str) -> list[str]:
    """The words that name the command of a line (`data inspect`, `keys create`, `train`)."""
    from tests.test_cli import command_paths

    words = shlex.split(command)[1:]
    paths = [path for path in command_paths() if words[: len(path)] == path]
    return max(paths, key=len)


def test_the_readme_shows_commands() -> None:
    commands = readme_commands()
    assert len(commands) > 40 and "cnnlab models" in commands
    assert not [c for c in commands if "digit.png" in c or "photo.jpg" in c]  # files that exist nowhere


def test_every_skipped_line_is_still_in_the_readme() -> None:
    assert sorted(set(SKIPPED) - set(readme_commands())) == []


def test_every_command_the_readme_shows_has_help(capsys, monkeypatch) -> None:
    for words in {tuple(command_words(c)) for c in readme_commands()}:
        code, out, _ = run_cli([*words, "--help"], capsys, monkeypatch)
        assert code == 0 and "Example" in out, words


@pytest.mark.slow
def test_every_cheap_readme_line_runs_as_printed(tmp_path: Path, capsys, monkeypatch) -> None:
    """In README order, after the demo that the lines on `runs/demo` read (two epochs: the lines check
    that the commands run on its bundle and examples, not how accurate it is)."""
    work = tmp_path / "main"
    work.mkdir()
    (tmp_path / "shared").symlink_to(SHARED_DATA.parent, target_is_directory=True)  # ../shared/data, as here
    monkeypatch.chdir(work)
    code, out, _ = run_cli(["demo", "--epochs", "2"], capsys, monkeypatch)
    assert code == 0 and "examples: 10 test images to try, runs/demo/examples/digit-0.png" in out
    ran = []
    for command in readme_commands():
        if command in SKIPPED:
            continue
        code, out, err = run_cli(shlex.split(command)[1:], capsys, monkeypatch)
        assert code == 0, f"`{command}` exited {code}: {err.strip()[-500:]}"
        ran.append(command)
    # what the point of issue 17 was: the lines on the demo's bundle and its example images
    for must in ("cnnlab predict runs/demo runs/demo/examples/digit-7.png --topk 3",
                 "cnnlab featuremaps runs/demo runs/demo/examples/digit-7.png --all-stages",
                 "cnnlab explain runs/demo runs/demo/examples/digit-7.png --method gradcam++ --class 7",
                 "cnnlab filters runs/demo", "cnnlab evaluate runs/demo", "cnnlab recipe list",
                 "cnnlab models", "cnnlab keys list", "cnnlab audit verify"):  # fmt: skip
        assert must in ran
    assert (work / "runs" / "demo" / "eval" / "report.html").is_file()
