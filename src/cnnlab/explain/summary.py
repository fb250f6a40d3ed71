"""What a network is, measured: parameters, multiply-adds, depth, kernel sizes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import fx, nn
from torch.utils.flop_counter import FlopCounterMode

from cnnlab.errors import ModelError
from cnnlab.explain.calc import same_padding


@dataclass(frozen=True)
class ModelStats:
    parameters: int
    trainable: int
    macs: int
    """Multiply-adds of one forward pass on one image (FLOPs / 2, as papers count them)."""
    depth: int
    """Weight layers: convolutions and fully connected layers."""
    largest_kernel: str


def measure(model: nn.Module, input_shape: tuple[int, int, int]) -> ModelStats:
    kernels = [m.kernel_size for m in model.modules() if isinstance(m, nn.Conv2d)]
    largest = max(kernels, key=lambda k: k[0] * k[1]) if kernels else None
    depth = sum(1 for m in model.modules() if isinstance(m, nn.Conv2d | nn.Linear))
    was_training = model.training
    model.eval()
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(torch.zeros(1, *input_shape))
    model.train(was_training)
    return ModelStats(
        parameters=sum(p.numel() for p in model.parameters()),
        trainable=sum(p.numel() for p in model.parameters() if p.requires_grad),
        macs=counter.get_total_flops() // 2,
        depth=depth,
        largest_kernel=f"{largest[0]}x{largest[1]}" if largest else "-",
    )


# --------------------------------------------------------------------------- the layer table
#
# Receptive fields are propagated over the traced graph (torch.fx), not module order: a ResNet
# skip and an Inception branch each carry their own field, and where branches meet (add, cat)
# the field is the union of theirs. Each node's field is (size, jump, start) per axis:
#   size_out  = size_in + D(K-1) * jump_in
#   jump_out  = jump_in * S
#   start_out = start_in + (D(K-1)/2 - P_before) * jump_in   (centre of the first unit, input px)


@dataclass(frozen=True)
class Field:
    size: tuple[int, int]
    """Receptive field (height, width) in input pixels."""
    jump: tuple[int, int]
    """Effective stride: input pixels between neighbouring units."""
    start: tuple[float, float]
    """Centre of the top-left unit's field, in input pixel coordinates."""


WHOLE_INPUT = "whole input"
"""After global pooling, a dense layer or a global gate (squeeze-excitation), every unit sees it all."""


@dataclass(frozen=True)
class LayerRow:
    name: str
    type: str
    kernel: str
    stride: str
    padding: str
    dilation: str
    output: tuple[int, ...]
    """Output shape without the batch dimension."""
    parameters: int
    macs: int
    field: Field | str
    """A Field, WHOLE_INPUT, or why the field is not defined here."""

    @property
    def receptive_field(self) -> str:
        return _pair(self.field.size) if isinstance(self.field, Field) else self.field

    @property
    def jump(self) -> str:
        return _pair(self.field.jump) if isinstance(self.field, Field) else "-"


@dataclass(frozen=True)
class LayerTable:
    input_shape: tuple[int, int, int]
    rows: list[LayerRow]
    parameters: int
    """All parameters of the model."""
    trainable: int
    unused_parameters: int
    """Parameters of modules the inference graph never calls (Inception's auxiliary head)."""
    macs: int

    def row(self, name: str) -> LayerRow:
        for r in self.rows:
            if r.name == name:
                return r
        raise KeyError(name)


def _pair(values: tuple[Any, Any]) -> str:
    return str(values[0]) if values[0] == values[1] else f"{values[0]}x{values[1]}"


def _two(value: Any) -> tuple[int, int]:
    return (int(value[0]), int(value[1])) if isinstance(value, tuple | list) else (int(value), int(value))


_SPATIAL_MODULES = (nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d)
_ADAPTIVE = (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)
_SKIP_FUNCTIONS = {"getitem", "getattr", "size", "dim", "contiguous", "clone", "to", "float", "type_as", "detach"}


class _Tracer(fx.Tracer):
    """Stops at convolutions, pools, norms and dense layers (timm's TF-`same` convs included)."""

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        if isinstance(m, _SPATIAL_MODULES + _ADAPTIVE + (nn.Linear, nn.modules.batchnorm._BatchNorm, nn.GroupNorm)):
            return True
        return super().is_leaf_module(m, qualname)


def trace(model: nn.Module) -> fx.GraphModule:
    try:
        graph = _Tracer().trace(model)
    except Exception as exc:  # fx raises many kinds on data-dependent control flow
        raise ModelError(f"cannot trace {type(model).__name__} with torch.fx: {str(exc).splitlines()[0]}") from None
    return fx.GraphModule(model, graph)


def layer_table(model: nn.Module, input_shape: tuple[int, int, int]) -> LayerTable:
    """One row per layer of the traced inference graph, with exact receptive fields."""
    from torch.fx.passes.shape_prop import ShapeProp

    was_training = model.training
    model.eval()
    try:
        gm = trace(model)
        with torch.no_grad():
            ShapeProp(gm).propagate(torch.zeros(1, *input_shape))
    finally:
        model.train(was_training)
    modules = dict(gm.named_modules())
    fields: dict[fx.Node, Field | str | None] = {}
    rows: list[LayerRow] = []
    counted: set[int] = set()
    used: set[int] = set()
    calls: dict[str, int] = {}
    for node in gm.graph.nodes:
        shape = _shape(node)
        if node.op == "placeholder":
            fields[node] = Field((1, 1), (1, 1), (0.0, 0.0))
            continue
        if node.op in ("output", "get_attr") or shape is None:
            fields[node] = None
            continue
        module = modules.get(node.target) if node.op == "call_module" else None
        fname = _function_name(node)
        if module is None and fname in _SKIP_FUNCTIONS:
            fields[node] = _inputs(node, fields)[0][1] if _inputs(node, fields) else None
            continue
        geometry = _geometry(node, module, fname, gm)
        field = _propagate(node, shape, geometry, fields)
        fields[node] = field
        params = 0
        if module is not None:
            for p in module.parameters():
                used.add(id(p))
                if id(p) not in counted:
                    counted.add(id(p))
                    params += p.numel()
        kernel, stride, padding, dilation = ("-",) * 4
        if geometry is not None:
            k, s, pads, d = geometry
            kernel, stride, dilation = f"{k[0]}x{k[1]}", _pair(s), _pair(d)
            padding = _pair(tuple(p[0] if p[0] == p[1] else f"{p[0]}/{p[1]}" for p in pads))
        row_name = str(node.target) if node.op == "call_module" else node.name
        calls[row_name] = calls.get(row_name, 0) + 1
        if calls[row_name] > 1:  # a module called again (ResNet's one ReLU per block)
            row_name = f"{row_name} ({calls[row_name]})"
        rows.append(
            LayerRow(
                name=row_name,
                type=type(module).__name__ if module is not None else fname,
                kernel=kernel,
                stride=stride,
                padding=padding,
                dilation=dilation,
                output=tuple(shape[1:]),
                parameters=params,
                macs=_macs(node, module, shape, gm),
                field=field if field is not None else "not defined (no spatial map)",
            )
        )
    all_params = list(model.parameters())
    for node in gm.graph.nodes:  # parameters used directly by functions (timm's class tokens, F.conv2d weights)
        if node.op == "get_attr":
            used.add(id(_attr(gm, node.target)))
    return LayerTable(
        input_shape=input_shape,
        rows=rows,
        parameters=sum(p.numel() for p in all_params),
        trainable=sum(p.numel() for p in all_params if p.requires_grad),
        unused_parameters=sum(p.numel() for p in all_params if id(p) not in used),
        macs=sum(r.macs for r in rows),
    )


def _attr(gm: fx.GraphModule, target: str) -> Any:
    obj: Any = gm
    for part in target.split("."):
        obj = getattr(obj, part)
    return obj


def _shape(node: fx.Node) -> tuple[int, ...] | None:
    meta = node.meta.get("tensor_meta")
    return tuple(meta.shape) if meta is not None and hasattr(meta, "shape") else None


def _function_name(node: fx.Node) -> str:
    if node.op == "call_function":
        return getattr(node.target, "__name__", str(node.target)).strip("_")
    if node.op == "call_method":
        return str(node.target)
    return ""


def _inputs(node: fx.Node, fields: dict[fx.Node, Any]) -> list[tuple[fx.Node, Any]]:
    found: list[tuple[fx.Node, Any]] = []

    def visit(arg: Any) -> None:
        if isinstance(arg, fx.Node):
            if _shape(arg) is not None and arg.op != "get_attr":
                found.append((arg, fields.get(arg)))
        elif isinstance(arg, list | tuple):
            for a in arg:
                visit(a)

    for a in (*node.args, *node.kwargs.values()):
        visit(a)
    return found


Geometry = tuple[tuple[int, int], tuple[int, int], tuple[tuple[int, int], tuple[int, int]], tuple[int, int]]
"""kernel (h, w), stride (h, w), padding ((top, bottom), (left, right)), dilation (h, w)."""


def _geometry(node: fx.Node, module: nn.Module | None, fname: str, gm: fx.GraphModule) -> Geometry | None:
    in_shape = _first_input_shape(node)
    if module is not None:
        if isinstance(module, _SPATIAL_MODULES):
            k, s = _two(module.kernel_size), _two(module.stride or module.kernel_size)
            d = _two(getattr(module, "dilation", 1))
            if type(module).__name__.endswith("Same") and in_shape is not None:  # timm's TF-`same` padding
                pads = (same_padding(in_shape[2], k[0], s[0], d[0]), same_padding(in_shape[3], k[1], s[1], d[1]))
            elif isinstance(module.padding, str):  # nn.Conv2d(padding="same"): stride 1, extra pixel after
                total = [d[i] * (k[i] - 1) if module.padding == "same" else 0 for i in range(2)]
                pads = ((total[0] // 2, total[0] - total[0] // 2), (total[1] // 2, total[1] - total[1] // 2))
            else:
                p = _two(module.padding)
                pads = ((p[0], p[0]), (p[1], p[1]))
            return k, s, pads, d
        if isinstance(module, _ADAPTIVE) and in_shape is not None:
            return _adaptive(in_shape, _shape(node))
        return None
    if fname in ("max_pool2d", "avg_pool2d", "boolean_dispatch"):
        args = list(node.args[1:]) + [None] * 4
        k = _two(node.kwargs.get("kernel_size", args[0]))
        s = node.kwargs.get("stride", args[1])
        s = _two(s) if s not in (None, []) else k
        p = _two(node.kwargs.get("padding", args[2] if args[2] is not None else 0))
        d = _two(node.kwargs.get("dilation", args[3] if fname != "avg_pool2d" and args[3] is not None else 1))
        return k, s, ((p[0], p[0]), (p[1], p[1])), d
    if fname == "conv2d":
        weight = node.args[1] if len(node.args) > 1 else node.kwargs["weight"]
        wshape = _shape(weight) if isinstance(weight, fx.Node) else None
        if wshape is None:
            return None
        args = list(node.args[3:]) + [None] * 3
        s = _two(node.kwargs.get("stride", args[0] if args[0] is not None else 1))
        p = _two(node.kwargs.get("padding", args[1] if args[1] is not None else 0))
        d = _two(node.kwargs.get("dilation", args[2] if args[2] is not None else 1))
        return (wshape[2], wshape[3]), s, ((p[0], p[0]), (p[1], p[1])), d
    if fname in ("adaptive_avg_pool2d", "adaptive_max_pool2d") and in_shape is not None:
        return _adaptive(in_shape, _shape(node))
    return None


def _adaptive(in_shape: tuple[int, ...], out_shape: tuple[int, ...] | None) -> Geometry | None:
    """An adaptive pool is an ordinary one when the sizes divide; else its windows vary."""
    if out_shape is None or len(out_shape) != 4:
        return None
    h, w, oh, ow = in_shape[2], in_shape[3], out_shape[2], out_shape[3]
    if h % oh or w % ow:
        return None
    k = (h // oh, w // ow)
    return k, k, ((0, 0), (0, 0)), (1, 1)


def _first_input_shape(node: fx.Node) -> tuple[int, ...] | None:
    for arg in node.args:
        if isinstance(arg, fx.Node):
            return _shape(arg)
    return None


def _propagate(
    node: fx.Node, shape: tuple[int, ...], geometry: Geometry | None, fields: dict[fx.Node, Any]
) -> Field | str | None:
    inputs = _inputs(node, fields)
    if not inputs:
        return None
    if geometry is not None:
        field = inputs[0][1]
        if not isinstance(field, Field):
            return field
        k, s, pads, d = geometry
        return Field(
            size=tuple(field.size[i] + d[i] * (k[i] - 1) * field.jump[i] for i in range(2)),  # type: ignore[arg-type]
            jump=tuple(field.jump[i] * s[i] for i in range(2)),  # type: ignore[arg-type]
            start=tuple(field.start[i] + (d[i] * (k[i] - 1) / 2 - pads[i][0]) * field.jump[i] for i in range(2)),  # type: ignore[arg-type]
        )
    spatial_out = shape[2:] if len(shape) == 4 else None
    local: list[Field] = []
    whole = False
    for arg, field in inputs:
        arg_shape = _shape(arg)
        if field is None or isinstance(field, str):
            if field == WHOLE_INPUT:
                whole = True
                continue
            if field is None and arg_shape is not None and len(arg_shape) != 4:
                continue  # a scalar or vector operand (a scale, a temperature)
            return field
        if spatial_out is None:
            whole = True  # a spatial map reduced or flattened: each output sees every input unit
        elif arg_shape is not None and len(arg_shape) == 4 and tuple(arg_shape[2:]) == tuple(spatial_out):
            local.append(field)
        elif arg_shape is not None and len(arg_shape) == 4 and tuple(arg_shape[2:]) == (1, 1):
            whole = True  # a broadcast 1x1 map
        elif arg_shape is not None and len(arg_shape) == 4 and tuple(spatial_out) == (1, 1) and len(inputs) == 1:
            k = (int(arg_shape[2]), int(arg_shape[3]))  # a global reduction: one window over the whole map
            return _propagate(node, shape, (k, k, ((0, 0), (0, 0)), (1, 1)), fields)
        else:
            return f"not defined ({_function_name(node) or node.target} resamples)"
    if whole or not local:
        return WHOLE_INPUT
    if any(f.jump != local[0].jump for f in local):
        return "not defined (branches with different strides)"
    size, start = [], []
    for i in range(2):
        lo = min(f.start[i] - (f.size[i] - 1) / 2 * 1 for f in local)
        hi = max(f.start[i] + (f.size[i] - 1) / 2 * 1 for f in local)
        size.append(round(hi - lo) + 1)
        start.append((lo + hi) / 2)
    return Field(size=(size[0], size[1]), jump=local[0].jump, start=(start[0], start[1]))


def _macs(node: fx.Node, module: nn.Module | None, shape: tuple[int, ...], gm: fx.GraphModule) -> int:
    out = 1
    for v in shape:
        out *= int(v)
    if isinstance(module, nn.Conv2d):
        return out * (module.in_channels // module.groups) * module.kernel_size[0] * module.kernel_size[1]
    if isinstance(module, nn.Linear):
        return out * module.in_features
    fname = _function_name(node)
    if fname == "conv2d":
        w = node.args[1] if len(node.args) > 1 else node.kwargs.get("weight")
        wshape = _shape(w) if isinstance(w, fx.Node) else None
        return out * wshape[1] * wshape[2] * wshape[3] if wshape else 0
    if fname == "linear":
        w = node.args[1] if len(node.args) > 1 else node.kwargs.get("weight")
        wshape = _shape(w) if isinstance(w, fx.Node) else None
        return out * wshape[1] if wshape else 0
    if fname in ("matmul", "bmm", "mm"):
        a = _first_input_shape(node)
        return out * a[-1] if a else 0
    return 0


def dense_widths(table: LayerTable) -> list[int]:
    """Input size, then the output size of every weight layer in graph order: the widths a fully
    connected network would need to hold the same activations."""
    widths = [table.input_shape[0] * table.input_shape[1] * table.input_shape[2]]
    for r in table.rows:
        if r.parameters and r.macs:
            n = 1
            for v in r.output:
                n *= v
            widths.append(n)
    return widths
