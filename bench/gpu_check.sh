#!/usr/bin/env bash
# The device check to run once on a machine with an NVIDIA GPU: the device tests, then the fast
# Fashion-MNIST recipes and vgg-mini-cifar10 timed on the GPU beside the same runs on its CPU.
#
# On the device tool's machine (python3 there holds PyTorch; nothing can be downloaded), from
# this checkout, after preparing once here:
#   mkdir -p .gpu/data && cp -r /usr/share/datasets/fashion-mnist .gpu/data/ && cp -r ../shared/data/cifar10 .gpu/data/
#   (plus cnnlab's pure-Python dependencies the image lacks, as wheels in .whl: see the device README)
#   echo /.gpu/ >> .git/info/exclude
# then:  run(command="bash bench/gpu_check.sh", carry=[".gpu", ".whl"], timeout_s=540)
# Output: $OUT/gpu_check.log (also printed).
set -uo pipefail
OUT=${OUT:-/tmp/gpu-check}
mkdir -p "$OUT"
exec > >(tee "$OUT/gpu_check.log") 2>&1
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site
fi
export PYTHONPATH=src:${PYTHONPATH:-} PYTHONUNBUFFERED=1 CNNLAB_DATA=$PWD/.gpu/data CNNLAB_CACHE=/tmp/cnnlab-cache
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name(0))"

echo "== device tests (the same files CI runs on CPU)"
python3 -m pytest -q -p no:cacheprovider tests/engine/test_device.py tests/tasks/test_device_tasks.py tests/test_fast_recipes.py

echo "== time to accuracy on the GPU and on this machine's CPU"
for recipe in lenet5-fashion-mnist-fast simple-cnn-fashion-mnist-fast vgg-mini-cifar10; do
  for device in cuda cpu; do
    python3 - "$recipe" "$device" <<'PY'
import sys, time
from cnnlab import bundle
from cnnlab.config import load_config
from cnnlab.tasks.train import train
recipe, device = sys.argv[1], sys.argv[2]
cfg = load_config(recipe, overrides=[f"train.device={device}"])
start = time.perf_counter()
s = train(cfg, f"/tmp/gpu-runs/{recipe}-{device}", overwrite=True)
card = bundle.read_card(s.run_dir)
print(f"{recipe:<32} {device:<5} {card.training['precision']:<5} fit {s.train_seconds + s.eval_seconds:7.1f} s"
      f"  wall {time.perf_counter() - start:7.1f} s  test acc {s.test_accuracy:.4f}", flush=True)
PY
  done
done
