"""Explain throughput on CPU: cnnlab's batched CAM folder run (decode, Grad-CAM, overlay PNG) beside
two peers on the same images in this one process: the hand-written `explain.cam.gradcam` one image
at a time, and pytorch-grad-cam used naively (a new GradCAM object per image, weights unfrozen,
model output used for the target).

    python bench/explain_speed.py --run runs/demo --images runs/digits          # LeNet-5 sized
    python bench/explain_speed.py --run runs/lite0-xray --images ../shared/data/chest-xray/test
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from cnnlab.bundle.classifier import load
from cnnlab.tasks.predict import expand_inputs


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--run", type=Path, required=True)
    parser.add_argument(
        "--images", type=str, required=True, help="a folder of images (MNIST digits are written if missing)"
    )
    parser.add_argument("--limit", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=16)
    args = parser.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    folder = Path(args.images)
    if not folder.exists():
        _write_digits(folder, args.limit)
    clf = load(args.run)
    files = expand_inputs([str(folder)])[: args.limit]
    prep = clf.preprocessing
    print(f"{args.run} ({clf.card.architecture}), {len(files)} images at {prep.pad_to[0]}x{prep.pad_to[1]}, "
          f"{torch.get_num_threads()} threads")  # fmt: skip

    from cnnlab.tasks.explain import explain_files

    with tempfile.TemporaryDirectory() as tmp:
        list(explain_files(clf, files[:4], Path(tmp), batch_size=args.batch_size))  # warm-up
        t0 = time.perf_counter()
        done = sum(1 for r in explain_files(clf, files, Path(tmp) / "o", batch_size=args.batch_size) if not r.error)
        ours = time.perf_counter() - t0

    from cnnlab.data.preprocess import image_to_input
    from cnnlab.explain.cam import gradcam
    from cnnlab.tasks.explain import explainer_for

    layer = explainer_for(clf, "gradcam").layer
    pixels = [image_to_input(f, prep.channels, prep.resize_to, prep.pad_to, prep.crop) for f in files]
    t0 = time.perf_counter()
    for p in pixels:
        x = clf.normalized(p[None])
        index = int(clf.proba_from_pixels(p[None])[0].argmax())
        gradcam(clf.model, layer, x, index)
    hand = time.perf_counter() - t0

    from pytorch_grad_cam import GradCAM

    module = clf.model.get_submodule(layer)
    t0 = time.perf_counter()
    for p in pixels:
        cam = GradCAM(model=clf.model, target_layers=[module])
        cam(input_tensor=clf.normalized(p[None]), targets=None)
        del cam
    naive = time.perf_counter() - t0
    clf.model.eval()

    rows = [
        ("cnnlab explain (batched, incl. decode + overlay PNG)", ours / done),
        ("hand-written explain.cam.gradcam, one at a time", hand / len(pixels)),
        ("pytorch-grad-cam naive (new object per image)", naive / len(pixels)),
    ]
    for label, per_image in rows:
        print(f"{label:55s} {1 / per_image:7.1f} img/s  {per_image:.3f} s/img")
    print(
        f"cnnlab vs hand-written: {rows[1][1] / rows[0][1]:.2f}x; vs naive: {rows[2][1] / rows[0][1]:.2f}x "
        "(the peers skip decoding and writing overlays)"
    )


def _write_digits(folder: Path, n: int) -> None:
    from PIL import Image

    from cnnlab.data.decode import read_idx

    images = read_idx(Path(__file__).resolve().parents[2] / "shared/data/mnist/t10k-images-idx3-ubyte.gz")
    folder.mkdir(parents=True)
    for i in range(n):
        Image.fromarray(images[i]).save(folder / f"digit{i:04d}.png")


if __name__ == "__main__":
    main()
