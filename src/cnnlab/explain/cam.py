"""Class activation maps: a reference Grad-CAM written out (Selvaraju et al. 2017) and every method of
pytorch-grad-cam behind one leak-free, batched interface."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from cnnlab.choices import CAM_METHODS
from cnnlab.config import did_you_mean
from cnnlab.data.preprocess import Preprocessing
from cnnlab.engine.device import OnDevice, module_device
from cnnlab.errors import CnnlabError, ModelError
from cnnlab.models.factory import find_cam_layer


def gradcam(model: nn.Module, layer: str, x: torch.Tensor, class_index: int) -> np.ndarray:
    """Heat map (H, W) in [0, 1] over the network input `x` (1, C, H, W) for one class.

    A binary (one-logit) model explains class 1 with +logit and class 0 with -logit. Hooks are
    removed whatever happens."""
    module = model.get_submodule(layer)
    saved: dict[str, torch.Tensor] = {}
    hooks = [
        module.register_forward_hook(lambda m, i, o: saved.__setitem__("act", o)),
        module.register_full_backward_hook(lambda m, gi, go: saved.__setitem__("grad", go[0])),
    ]
    was_training = model.training
    try:
        model.eval()
        with torch.enable_grad():
            logits = model(x.detach().requires_grad_(True))
            score = logits[0, 0] * (1 if class_index == 1 else -1) if logits.shape[1] == 1 else logits[0, class_index]
            model.zero_grad(set_to_none=True)
            score.backward()
    finally:
        for hook in hooks:
            hook.remove()
        model.train(was_training)
    act, grad = saved["act"].detach(), saved["grad"].detach()
    cam = F.relu((grad.mean(dim=(2, 3), keepdim=True) * act).sum(dim=1, keepdim=True))
    cam = F.interpolate(cam, size=x.shape[-2:], mode="bilinear", align_corners=False)[0, 0]
    peak = float(cam.max())
    return (cam / peak).numpy() if peak > 0 else cam.numpy()


def overlay(image: np.ndarray, heat: np.ndarray, alpha: float = 0.45) -> np.ndarray:
    """The heat map in a jet-like colour over the (grey or RGB) uint8 image."""
    import matplotlib

    rgb = np.repeat(image, 3, axis=2) if image.shape[2] == 1 else image
    colours = (matplotlib.colormaps["jet"](heat)[..., :3] * 255).astype(np.float64)
    return (rgb.astype(np.float64) * (1 - alpha) + colours * alpha).round().astype(np.uint8)


# --------------------------------------------------------------------------- every CAM method
#
# pytorch-grad-cam computes the maps; this module decides what it hooks, keeps it from
# leaking and makes it fast on CPU:
# - one CAM object per run, used as a context manager, its hooks released on exit whatever happens;
# - after every batch its saved activations, gradients and `outputs` (which hold the retained
#   autograd graph) are dropped, so memory stays flat over any number of images;
# - parameters are frozen while it runs: the backward pass then computes activation gradients
#   only, not the weight gradients nobody reads (about half the backward work);
# - one-logit (sigmoid) models are explained as +logit for class 1 and -logit for class 0.

METHODS = CAM_METHODS


class ClassTarget:
    """The score a CAM explains: the class logit (or +-logit of a one-output binary model)."""

    def __init__(self, index: int | None, binary: bool = False) -> None:
        self.index = index
        """None: the class the output predicts."""
        self.binary = binary

    def __call__(self, output: torch.Tensor) -> torch.Tensor:
        if self.binary:
            logit = output[..., 0]
            index = self.index if self.index is not None else int(bool((logit.detach() > 0).all()))
            return logit if index == 1 else -logit
        index = self.index if self.index is not None else int(output.detach().reshape(-1, output.shape[-1])[0].argmax())
        return output[..., index]


def conv_layer_names(model: nn.Module) -> list[str]:
    return [n for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]


def get_layer(model: nn.Module, name: str) -> nn.Module:
    try:
        return model.get_submodule(name)
    except AttributeError:
        convs = conv_layer_names(model)
        hint = did_you_mean(name, convs)
        shown = ", ".join(convs[:12]) + (f" and {len(convs) - 12} more" if len(convs) > 12 else "")
        raise ModelError(f"no layer '{name}' in {type(model).__name__}{hint}; its conv layers: {shown}") from None


def _cam_class(method: str) -> type:
    import pytorch_grad_cam as pgc

    classes = {
        "gradcam": pgc.GradCAM,
        "gradcam++": pgc.GradCAMPlusPlus,
        "scorecam": _QuietScoreCAM,
        "eigencam": pgc.EigenCAM,
        "layercam": pgc.LayerCAM,
    }
    if method not in classes:
        raise CnnlabError(f"unknown CAM method '{method}'; choose one of {', '.join(METHODS)}")
    return classes[method]


class CamExplainer:
    """Heat maps for batches of normalised network inputs, one method and layer, hooks released on exit.

    >>> with CamExplainer(model, "features.c3", "gradcam") as cam:
    ...     heat = cam(x, [3, 7])   # (N, H, W) in [0, 1]
    """

    def __init__(self, model: nn.Module, layer: str, method: str = "gradcam", binary: bool = False) -> None:
        # Inputs may come from the CPU whatever device the model is on (masks, blurred canvases):
        # `model` answers on the input's device.
        self.model = OnDevice(model)
        self.layer = layer
        self.method = method
        self.binary = binary
        self.module = get_layer(model, layer)
        self._factory = _cam_class(method)
        self._cam: Any = None
        self._saved: list[tuple[torch.nn.Parameter, bool]] = []
        self._was_training = model.training

    def __enter__(self) -> CamExplainer:
        self._was_training = self.model.training
        self._saved = [(p, p.requires_grad) for p in self.model.parameters()]
        for p, _ in self._saved:
            p.requires_grad_(False)
        try:
            self._cam = self._factory(model=self.model, target_layers=[self.module])
            if self.method == "scorecam":
                self._cam.batch_size = 64
        except BaseException:
            self._restore()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        if self._cam is not None:
            self._cam.activations_and_grads.release()
            self._cam.outputs = None
            self._cam = None
        self._restore()

    def _restore(self) -> None:
        for p, flag in self._saved:
            p.requires_grad_(flag)
        self._saved = []
        self.model.train(self._was_training)

    def __call__(self, x: torch.Tensor, class_indices: list[int] | None = None) -> np.ndarray:
        return self.explain(x, class_indices)[0]

    def explain(self, x: torch.Tensor, class_indices: list[int] | None = None) -> tuple[np.ndarray, torch.Tensor]:
        """(N, H, W) heat maps in [0, 1] for normalised inputs `x` (N, C, H, W), and the logits of
        that same forward pass. Without `class_indices`, each image's predicted class."""
        if self._cam is None:
            raise RuntimeError("use CamExplainer as a context manager")
        # Frozen parameters: the input must ask for gradients or no activation would get one.
        inputs = x.detach().clone().requires_grad_(self._cam.uses_gradients)
        indices = list(class_indices) if class_indices is not None else [None] * len(x)
        targets = [ClassTarget(i, self.binary) for i in indices]
        try:
            with torch.enable_grad():
                heat = self._cam(input_tensor=inputs, targets=targets)
            logits = self._cam.outputs.detach().float().cpu()
            store = self._cam.activations_and_grads
            if self._cam.uses_gradients and not store.gradients:
                raise ModelError(f"layer '{self.layer}' receives no gradient; pick another with --layer")
            if store.activations and store.activations[0].ndim != 4:
                raise ModelError(f"layer '{self.layer}' has no spatial output; pick a convolution with --layer")
        finally:
            self._cam.outputs = None  # holds the retained graph until the next call otherwise
            self._cam.activations_and_grads.clear()
        heat = np.nan_to_num(np.asarray(heat, dtype=np.float32), nan=0.0, posinf=0.0, neginf=0.0)
        heat = np.clip(heat, 0.0, None)
        peak = heat.reshape(len(heat), -1).max(axis=1)  # pytorch-grad-cam's eps shrinks tiny maps
        heat = np.where(peak[:, None, None] > 0, heat / np.maximum(peak, 1e-30)[:, None, None], heat)
        return heat.astype(np.float32), logits


def _score_cam_base() -> type:
    from pytorch_grad_cam import ScoreCAM

    return ScoreCAM


class _QuietScoreCAM:
    """Score-CAM without its per-image tqdm bar on stderr (the CLI has its own progress)."""

    def __new__(cls, model: nn.Module, target_layers: list[nn.Module]) -> Any:
        base = _score_cam_base()

        class Quiet(base):  # type: ignore[misc, valid-type]
            def get_cam_weights(self, input_tensor, target_layer, targets, activations, grads):
                with torch.no_grad():
                    maps = F.interpolate(
                        torch.from_numpy(activations).to(input_tensor.device),
                        size=input_tensor.shape[-2:],
                        mode="bilinear",
                        align_corners=True,
                    )
                    flat = maps.flatten(2)
                    lo, hi = flat.min(-1)[0][..., None, None], flat.max(-1)[0][..., None, None]
                    maps = (maps - lo) / (hi - lo + 1e-8)
                    weights = []
                    for target, image, masks in zip(targets, input_tensor, maps, strict=True):
                        scores = [
                            target(self.model(image[None] * masks[i : i + self.batch_size, None]))
                            for i in range(0, masks.shape[0], self.batch_size)
                        ]
                        weights.append(torch.cat(scores).softmax(-1))
                    return torch.stack(weights).cpu().numpy()

        return Quiet(model, target_layers)


def resolve_cam_layer(model: nn.Module, preferred: str | None, input_shape: tuple[int, int, int]) -> str:
    """The layer to explain: `preferred` (the spec's or the card's) if it yields a spatial map and a
    non-zero gradient on a random input, else the last convolution with a spatial output."""
    candidates = [preferred] if preferred else []
    fallback = find_cam_layer(model, input_shape[0], input_shape[1])
    # A block whose last convolution gets no gradient at initialisation (timm ResNets zero the
    # last norm of each block) still explains through the block's output: try its parents next.
    parts = fallback.split(".")
    for name in [fallback] + [".".join(parts[:i]) for i in range(len(parts) - 1, 0, -1)]:
        if name not in candidates:
            candidates.append(name)
    generator = torch.Generator().manual_seed(0)  # drawn on the CPU: the same probe on every device
    x = torch.randn(1, *input_shape, generator=generator).to(module_device(model))
    reasons = []
    for name in candidates:
        get_layer(model, name)
        ok, why = _gradient_check(model, name, x)
        if ok:
            return name
        reasons.append(f"{name}: {why}")
    raise ModelError("no layer yields a usable CAM: " + "; ".join(reasons))


def _gradient_check(model: nn.Module, layer: str, x: torch.Tensor) -> tuple[bool, str]:
    module = model.get_submodule(layer)
    saved: dict[str, torch.Tensor] = {}

    def keep(mod: nn.Module, inp: Any, out: Any) -> None:
        if isinstance(out, torch.Tensor) and out.requires_grad:
            saved["act"] = out
            out.register_hook(lambda g: saved.__setitem__("grad", g))

    hook = module.register_forward_hook(keep)
    was_training = model.training
    frozen = [(p, p.requires_grad) for p in model.parameters()]
    try:
        model.eval()
        for p, _ in frozen:
            p.requires_grad_(False)
        with torch.enable_grad():
            out = model(x.clone().requires_grad_(True))
            out[0].sum().backward() if out.shape[1] == 1 else out[0, out[0].argmax()].backward()
    finally:
        hook.remove()
        for p, flag in frozen:
            p.requires_grad_(flag)
        model.train(was_training)
    act, grad = saved.get("act"), saved.get("grad")
    if act is None or act.ndim != 4:
        return False, "no 4-D output"
    if act.shape[-1] * act.shape[-2] <= 1:
        return False, "a 1x1 output has no spatial extent"
    if grad is None or not bool(torch.isfinite(grad).all()) or float(grad.abs().sum()) == 0.0:
        return False, "no gradient reaches it"
    return True, ""


def heat_on_image(heat: np.ndarray, shape: tuple[int, int], prep: Preprocessing) -> np.ndarray:
    """Undo pad, resize and crop: the network-input heat map laid over the original image."""
    (ph, pw), (rh, rw) = prep.pad_to, prep.resize_to
    top, left = (ph - rh) // 2, (pw - rw) // 2
    inner = torch.from_numpy(heat[top : top + rh, left : left + rw].copy())[None, None]
    h, w = shape
    if prep.crop:  # the centred window of the resize target's aspect, as center_crop_to_aspect took it
        aspect = rw / rh
        ch, cw = (h, max(1, round(h * aspect))) if w > h * aspect else (max(1, round(w / aspect)), w)
    else:
        ch, cw = h, w
    window = F.interpolate(inner, size=(ch, cw), mode="bilinear", align_corners=False)[0, 0].numpy()
    out = np.zeros((h, w), dtype=np.float32)
    y0, x0 = (h - ch) // 2, (w - cw) // 2
    out[y0 : y0 + ch, x0 : x0 + cw] = window
    return out
