"""The bundles a service holds: several versions per model name, one of them active."""

from __future__ import annotations

import contextlib
import hashlib
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from cnnlab.bundle.classifier import Classifier, load
from cnnlab.errors import BundleError
from cnnlab.evaluation.metrics import wilson_interval
from cnnlab.serve.store import Rollout, Store

VERSION_CHARS = 12
"""A version is the first hex digits of the weights' sha256: stable, and the same on every machine."""
LOCK_POLL_S = 0.05
"""How often work waiting for the model checks whether its request has given up on it."""


class WorkCancelled(Exception):
    """Raised inside work whose request stopped waiting for it (it timed out): nobody reads the result."""


@dataclass
class LoadedModel:
    name: str
    version: str
    sha256: str
    created_at: str
    run_dir: Path
    classifier: Classifier
    lock: threading.Lock = field(default_factory=threading.Lock)
    """Held for every forward pass: a CAM's hooks on the shared module must not see another request's pass."""
    _cancel: threading.Event | None = field(default=None, init=False, repr=False)
    """The cancel flag of the work that holds `lock` now."""

    def __post_init__(self) -> None:
        # A timed-out request cannot kill its worker thread; instead every layer checks, before it runs,
        # whether the work holding the model was given up, so a long explanation (Score-CAM runs the
        # network once per batch of activation maps) stops within one layer and frees the model.
        for module in self.classifier.model.modules():
            if next(module.children(), None) is None:
                module.register_forward_pre_hook(self._stop_if_cancelled)

    def _stop_if_cancelled(self, _module: Any, _inputs: Any) -> None:
        cancel = self._cancel
        if cancel is not None and cancel.is_set():
            raise WorkCancelled(f"{self.name}@{self.version}: the request gave up on this work")

    @contextmanager
    def running(self, cancel: threading.Event) -> Iterator[None]:
        """Hold the model for one request's work, which stops at its next layer once `cancel` is set
        (and never starts when it is set while waiting for the model)."""
        while not self.lock.acquire(timeout=LOCK_POLL_S):
            if cancel.is_set():
                raise WorkCancelled(f"{self.name}@{self.version}: the request gave up waiting for the model")
        self._cancel = cancel
        try:
            yield
        finally:
            self._cancel = None
            self.lock.release()

    # Every model-card lookup of the service is in this module: a change to the card touches this file only.
    @property
    def architecture(self) -> str | None:
        return self.classifier.card.architecture

    @property
    def calibrated(self) -> bool:
        return self.classifier.card.calibrated

    @property
    def operating_point(self) -> dict[str, Any] | None:
        """{"positive": [class, ...], "value": threshold, ...} when the bundle was calibrated with one."""
        return self.classifier.card.threshold

    @property
    def validation_distribution(self) -> dict[str, float] | None:
        """The share of each predicted class on the validation set, when the bundle records it."""
        reference = self.classifier.card.reference or {}
        return reference.get("predicted_distribution")

    @property
    def validation_accuracy(self) -> dict[str, Any] | None:
        """{"accuracy", "ci" (Wilson 95%), "n"} on the validation split, when the card records both."""
        accuracy = self.classifier.card.metrics.get("val_accuracy")
        n = (self.classifier.card.data.get("splits") or {}).get("val")
        if accuracy is None or not n:
            return None
        interval = wilson_interval(round(float(accuracy) * int(n)), int(n))
        return {"accuracy": float(accuracy), "ci": interval.to_list(), "n": int(n)}

    def describe(self, active: bool) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "sha256": self.sha256,
            "created_at": self.created_at,
            "architecture": self.architecture,
            "classes": self.classifier.classes,
            "calibrated": self.calibrated,
            "operating_point": self.operating_point,
            "active": active,
        }


def load_model(run_dir: Path, device: torch.device | str | None = "cpu") -> LoadedModel:
    clf = load(run_dir, device=device)
    card = clf.card
    sha = card.weights_sha256
    return LoadedModel(card.name, sha[:VERSION_CHARS], sha, card.created_at, run_dir, clf)


def in_canary(routing_key: str, fraction: float) -> bool:
    """Whether a request keyed `routing_key` (a patient's key, else the request id) goes to the canary:
    a stable hash, so one patient's images always meet the same version while a rollout lasts."""
    bucket = int.from_bytes(hashlib.sha256(f"canary:{routing_key}".encode()).digest()[:8], "big") / 2**64
    return bucket < fraction


@dataclass(frozen=True)
class Routed:
    """Who answers one request: `model` (on the `arm` "active" or "canary"), and a shadow that predicts
    on the same image without being shown, or None."""

    model: LoadedModel
    arm: str
    shadow: LoadedModel | None = None


class ModelRegistry:
    """Swapping the active version is one dict assignment: a request that already holds its
    `LoadedModel` finishes on it, the next one gets the new version."""

    def __init__(self, models: list[LoadedModel], store: Store, device: str = "cpu") -> None:
        self.device = device
        """Where the models run, as `/readyz` reports it (`cpu`, `cuda:0 (NVIDIA H200)`)."""
        self._versions: dict[str, dict[str, LoadedModel]] = {}
        for m in models:
            same = self._versions.setdefault(m.name, {})
            if m.version in same:
                raise BundleError(f"{m.run_dir} and {same[m.version].run_dir} hold the same model {m.name}@{m.version}")
            same[m.version] = m
        self._store = store
        self._active: dict[str, LoadedModel] = {}
        for name, versions in self._versions.items():
            chosen = store.activation(name)
            newest = max(versions.values(), key=lambda m: m.created_at)
            if chosen is None:
                # Recorded, so that a bundle added at a later start waits for the gate instead of going live.
                # Another worker may record its choice first (the same newest): then theirs stands.
                with contextlib.suppress(IntegrityError):
                    store.change_active(name, newest.version, None, "initial", "the newest version at the first start")
                chosen = store.activation(name)
            if chosen not in versions:
                # Serving another version than the database names would put an ungated bundle in front of
                # patients, and machines loading different bundles would disagree: refuse to start.
                raise BundleError(
                    f"the database's active version of '{name}' is {chosen}, which is not among the bundles given "
                    f"({', '.join(sorted(versions))}); add its bundle (then activate another through the gate)"
                )
            self._active[name] = versions[chosen]

    @classmethod
    def from_runs(cls, runs: list[Path], store: Store, device: torch.device | str | None = "cpu") -> ModelRegistry:
        """Every bundle of `runs` on `device`, chosen once when the service starts."""
        models = [load_model(Path(r), device) for r in runs]
        return cls(models, store, models[0].classifier.device_name if models else str(device))

    def names(self) -> list[str]:
        return sorted(self._versions)

    def active(self, name: str) -> LoadedModel | None:
        """The active version, as the shared database says now: an activation made by another
        worker process or machine takes effect here on the next request."""
        versions = self._versions.get(name)
        if not versions:
            return None
        try:
            chosen = self._store.activation(name)
        except SQLAlchemyError:  # a database that cannot answer right now: keep serving what we had
            chosen = None
        if chosen in versions:
            self._active[name] = versions[chosen]
        return self._active.get(name)

    def rollout(self, name: str) -> tuple[Rollout, LoadedModel] | None:
        """The rollout of `name` as the database says now, when its version is loaded here."""
        try:
            row = self._store.rollout(name)
        except SQLAlchemyError:  # as for the active version: a database that cannot answer means no rollout
            return None
        model = self._versions.get(name, {}).get(row.version) if row else None
        return (row, model) if row is not None and model is not None else None

    def route(self, name: str, routing_key: str) -> Routed | None:
        """Who answers a request for `name` keyed `routing_key` (None when no such model is served)."""
        active = self.active(name)
        if active is None:
            return None
        rollout = self.rollout(name)
        if rollout is None or rollout[1] is active:
            return Routed(active, "active")
        row, candidate = rollout
        if row.mode == "shadow":
            return Routed(active, "active", shadow=candidate)
        return Routed(candidate, "canary") if in_canary(routing_key, row.fraction) else Routed(active, "active")

    def role(self, model: LoadedModel) -> tuple[str, float | None]:
        """("active" | "canary" | "shadow" | "inactive", the canary's fraction or None)."""
        if self.is_active(model):
            return "active", None
        rollout = self.rollout(model.name)
        if rollout is not None and rollout[1] is model:
            return rollout[0].mode, rollout[0].fraction if rollout[0].mode == "canary" else None
        return "inactive", None

    def versions(self, name: str) -> dict[str, LoadedModel]:
        return self._versions.get(name, {})

    def all(self) -> list[LoadedModel]:
        return [m for name in self.names() for m in sorted(self._versions[name].values(), key=lambda m: m.created_at)]

    def is_active(self, model: LoadedModel) -> bool:
        return self.active(model.name) is model

    def activate(
        self,
        model: LoadedModel,
        by: str | None,
        action: str,
        reason: str,
        gate_json: str | None,
        expected_active: LoadedModel | None,
    ) -> None:
        """Make `model` the active version, logged as `action`, if `expected_active` still is (else
        StaleDecision: a decision taken on a gate against another version must be taken again); a
        rollout of that very version ends."""
        rollout = self.rollout(model.name)
        ends = rollout is not None and rollout[1] is model
        expected = expected_active.version if expected_active else None
        self._store.change_active(
            model.name, model.version, by, action, reason, gate_json, ends, expected_active=expected, check=True
        )
        self._active[model.name] = model
