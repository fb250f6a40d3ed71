"""Input drift: are the images a deployed model sees still like the ones it was validated on?

At training time the bundle keeps a reference sample: the penultimate-layer embeddings (the
trunk's output averaged over space) of up to 256 validation images, and the class distribution
the model predicted on them. A service compares the embeddings of recent requests with that
sample by a kernel two-sample test: the squared maximum mean discrepancy (MMD) with a Gaussian
kernel whose bandwidth is the median pairwise distance, and a permutation p-value.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.numpy import load, save

from cnnlab.data.preprocess import normalize
from cnnlab.data.splits import seeded_subset
from cnnlab.fileio import atomic_write_bytes
from cnnlab.models.outputs import pooled_embedding, predicted_index

REFERENCE = "reference.safetensors"
REFERENCE_IMAGES = 256
MIN_RECENT = 30
"""Fewer recent requests than this: no verdict (the test has too little power to mean anything)."""


@torch.inference_mode()
def reference_sample(
    model: torch.nn.Module,
    images: torch.Tensor,
    mean: torch.Tensor,
    std: torch.Tensor,
    binary: bool,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """(embeddings (n, D), predicted class per image) of up to REFERENCE_IMAGES uint8 images."""
    idx = torch.from_numpy(seeded_subset(len(images), min(REFERENCE_IMAGES, len(images)), seed))
    model.eval()
    features = model.forward_features(normalize(images[idx], mean, std))
    predicted = predicted_index(model.forward_head(features).float(), binary).numpy()
    return pooled_embedding(features), predicted


def save_reference(
    run_dir: Path, embeddings: np.ndarray, predicted: np.ndarray, classes: Sequence[str]
) -> dict[str, Any]:
    """Write the reference sample beside the bundle; returns what the model card records of it."""
    data = save({"embeddings": embeddings.astype(np.float32), "predicted": predicted.astype(np.int64)})
    atomic_write_bytes(Path(run_dir) / REFERENCE, data)
    counts = np.bincount(predicted, minlength=len(classes))
    return {
        "file": REFERENCE,
        "split": "val",
        "images": len(predicted),
        "dimensions": int(embeddings.shape[1]),
        "predicted_distribution": dict(zip(classes, (counts / counts.sum()).tolist(), strict=True)),
    }


def load_reference(run_dir: Path) -> dict[str, np.ndarray] | None:
    path = Path(run_dir) / REFERENCE
    return load(path.read_bytes()) if path.is_file() else None


def _sq_distances(z: np.ndarray) -> np.ndarray:
    sq = np.sum(z * z, axis=1)
    return np.maximum(sq[:, None] + sq[None, :] - 2 * z @ z.T, 0.0)


@dataclass(frozen=True)
class DriftTest:
    statistic: float
    """Squared MMD (biased estimate) between recent and reference embeddings."""
    p_value: float
    recent: int
    reference: int
    permutations: int

    def to_dict(self, alpha: float = 0.05) -> dict[str, Any]:
        verdict = "drifted" if self.p_value < alpha else "not drifted"
        return {
            "method": f"MMD, Gaussian kernel (median bandwidth), {self.permutations} permutations",
            "statistic": self.statistic,
            "p_value": self.p_value,
            "alpha": alpha,
            "recent": self.recent,
            "reference": self.reference,
            "verdict": verdict,
        }


def mmd_test(recent: np.ndarray, reference: np.ndarray, permutations: int = 200, seed: int = 0) -> DriftTest:
    """Two-sample test of recent vs reference embeddings; the p-value is the share of random
    relabellings of the pooled sample whose MMD is at least the observed one."""
    z = np.concatenate([recent, reference]).astype(np.float64)
    m, n = len(recent), len(reference)
    d2 = _sq_distances(z)
    median = np.median(d2[np.triu_indices(len(z), k=1)])
    k = np.exp(-d2 / max(median, 1e-12))

    def mmd(labels: np.ndarray) -> float:
        a, b = labels, ~labels
        return float(k[np.ix_(a, a)].mean() + k[np.ix_(b, b)].mean() - 2 * k[np.ix_(a, b)].mean())

    observed_labels = np.r_[np.ones(m, bool), np.zeros(n, bool)]
    observed = mmd(observed_labels)
    rng = np.random.default_rng(seed)
    exceed = sum(mmd(rng.permutation(observed_labels)) >= observed for _ in range(permutations))
    return DriftTest(observed, (exceed + 1) / (permutations + 1), m, n, permutations)
