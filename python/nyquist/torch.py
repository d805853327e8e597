"""PyTorch modules backed by Nyquist's OpenCL kernels, drop-in for the published ones.

Each module is an ``nn.Module`` whose forward and backward run on Nyquist (a
``torch.autograd.Function`` over the C API), with the constructor, parameters and buffers of the
module it replaces, so that its ``state_dict`` loads unchanged::

    import torch, nyquist.torch as nt
    pool = nt.BlurPool(64, filt_size=4)            # antialiased_cnns.BlurPool(64, filt_size=4)
    y = pool(torch.randn(8, 64, 56, 56))

- ``BlurPool`` (antialiased_cnns.BlurPool), ``MaxBlurPool2d`` (MaxPool2d(2, 1) then BlurPool);
- ``AdaptiveBlurPool2d`` (the official adaptive module, Downsample_PASA_group_softmax);
- ``TIPS`` (the official TIPS module: returns the output, psi(x) and the shifted target x_t);
- ``APSPool2d`` (adaptive polyphase sampling; returns the chosen phase indices);
- ``LiftDownPool2d`` / ``LiftDownPool1d`` / ``LiftUpPool2d`` / ``LiftUpPool1d`` (LiftPool).

Tensors go through the host: a contiguous CPU float32 tensor is read in place (no copy; on a
CPU OpenCL device the kernels read its memory directly, elsewhere the library uploads it) and
the results are read back into new CPU tensors; tensors elsewhere (CUDA) are copied to the CPU
first and the results copied back.
docs/python.md states the cost. Double backward is not supported.
"""

import math

import numpy as np
import torch
from torch import nn

from . import NyquistError, _Layer

__all__ = [
    "BlurPool", "MaxBlurPool2d", "AdaptiveBlurPool2d", "TIPS", "APSPool2d",
    "LiftDownPool2d", "LiftDownPool1d", "LiftUpPool2d", "LiftUpPool1d",
]

_PADDING = {"refl": "reflect", "reflect": "reflect", "repl": "replicate", "replicate": "replicate", "zero": "zero"}


def _padding(pad_type):
    if pad_type not in _PADDING:
        raise ValueError(f"pad_type {pad_type!r}: use one of {sorted(_PADDING)}")
    return _PADDING[pad_type]


def _host(tensor):
    """A contiguous float32 CPU tensor with the values of `tensor` (the tensor itself when it
    is one already: no copy)."""
    return tensor.detach().to(device="cpu", dtype=torch.float32).contiguous()


def _empty(shape):
    return torch.empty(tuple(shape), dtype=torch.float32)


class _Runner:
    """One operator with its options, on one device: layers by input shape, each with the
    parameter values it holds (re-sent only when a tensor changed: PyTorch bumps a tensor's
    version on every in-place update, as an optimizer step)."""

    def __init__(self, op, device=None):
        self.op = op
        self.device = device
        self._layers = {}

    def layer(self, shape, options, training):
        key = (tuple(shape), tuple(sorted(options.items())), training)
        if key not in self._layers:
            self._layers[key] = [_Layer(self.op, tuple(shape), None, options, self.device), {}]
        return self._layers[key]

    @staticmethod
    def sync(entry, parameters):
        """Sends the parameters of `parameters` (name -> tensor) that changed since the layer
        last saw them."""
        layer, seen = entry
        changed = {}
        for name, tensor in parameters.items():
            stamp = (id(tensor), tensor._version, tensor.data_ptr())
            if seen.get(name) != stamp:
                changed[name] = (tensor, stamp)
        if changed:
            values = {name: _host(tensor) for name, (tensor, _) in changed.items()}
            layer.set_parameters({name: value.data_ptr() for name, value in values.items()})
            for name, (_, stamp) in changed.items():
                seen[name] = stamp


class _Call(torch.autograd.Function):
    """forward(ctx, plan, *tensors): `tensors` are the named inputs then the trainable
    parameters, as `plan` lists them; the outputs are the differentiable results, then the
    scalar results (0-dim tensors), then the non-differentiable ones."""

    @staticmethod
    def forward(ctx, plan, *tensors):
        layer = plan["layer"]
        given = tensors[:len(plan["inputs"])]
        inputs = {name: _host(tensor) for name, tensor in zip(plan["inputs"], given)}
        results = {name: _empty(layer.shape(name)) for name in plan["results"] + plan["constant_results"]}
        # The saved state reads the inputs in place (a CPU device): they are kept alive here,
        # and autograd refuses a backward after an in-place change of a saved input.
        saved = layer.forward({n: t.data_ptr() for n, t in inputs.items()},
                              {n: t.data_ptr() for n, t in results.items()}, training=plan["training"],
                              inputs_in_place=True)
        if plan["training"]:
            ctx.save_for_backward(*given)
            ctx.inputs = inputs
        scalars = saved.scalars() if saved is not None else {}
        ctx.plan, ctx.saved = plan, saved
        ctx.device = tensors[0].device
        device = ctx.device
        outputs = [results[name].to(device) for name in plan["results"]]
        outputs += [torch.tensor(scalars.get(name, 0.0), dtype=torch.float32, device=device) for name in plan["scalars"]]
        constants = [results[name].to(device) for name in plan["constant_results"]]
        ctx.mark_non_differentiable(*constants)
        return tuple(outputs + constants)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, *gradients):
        plan = ctx.plan
        ctx.saved_tensors  # noqa: B018 -- raises if a saved input changed in place since the forward
        if ctx.saved is None:
            raise NyquistError(1, f"{plan['op']}: backward of a forward that ran without gradients")
        layer = plan["layer"]
        count = len(plan["results"])
        result_gradients = {}
        for name, gradient in zip(plan["results"], gradients[:count]):
            if gradient is not None:
                result_gradients[name] = _host(gradient)
        if "output" not in result_gradients:
            result_gradients["output"] = torch.zeros(layer.shape("output"), dtype=torch.float32)
        scalar_gradients = {name: (float(gradient) if gradient is not None else 0.0)
                            for name, gradient in zip(plan["scalars"], gradients[count:count + len(plan["scalars"])])}
        names = plan["inputs"] + plan["parameters"]
        wanted = [name for name, needed in zip(names, ctx.needs_input_grad[1:]) if needed]
        outputs = {name: _empty(layer.shape(name)) for name in wanted}
        layer.backward(ctx.saved, {n: t.data_ptr() for n, t in result_gradients.items()}, scalar_gradients,
                       {n: t.data_ptr() for n, t in outputs.items()})
        return (None,) + tuple(outputs[name].to(ctx.device) if name in outputs else None for name in names)


def _call(runner, options, training, inputs, parameters=None, buffers=None, results=("output",), scalars=(),
          constant_results=()):
    """Runs `runner`'s operator: `inputs` and `parameters` (trainable, name -> tensor) by name,
    `buffers` further parameter values without gradients; returns the results in the order of
    `results`, `scalars`, `constant_results`."""
    parameters = parameters or {}
    shape = tuple(inputs["input"].shape)
    entry = runner.layer(shape, options, training)
    _Runner.sync(entry, {**parameters, **(buffers or {})})
    plan = {
        "op": runner.op, "layer": entry[0], "training": training,
        "inputs": list(inputs), "parameters": list(parameters), "results": list(results),
        "scalars": list(scalars), "constant_results": list(constant_results),
    }
    return _Call.apply(plan, *inputs.values(), *parameters.values())


def _needs_training(tensors):
    """Whether this call must save state for a backward."""
    return torch.is_grad_enabled() and any(t.requires_grad for t in tensors)


def _binomial_filter(filt_size):
    row = torch.tensor([math.comb(filt_size - 1, k) for k in range(filt_size)], dtype=torch.float32)
    filt = row[:, None] * row[None, :]
    return filt / filt.sum()


class BlurPool(nn.Module):
    """BlurPool (Zhang 2019) with antialiased_cnns.BlurPool's constructor and buffer ``filt``
    (channels x 1 x k x k, kept so that its state_dict loads; the filter applied is always the
    binomial one of ``filt_size``)."""

    def __init__(self, channels, pad_type="reflect", filt_size=4, stride=2, pad_off=0, device=None):
        super().__init__()
        self.channels, self.filt_size, self.stride, self.pad_off = channels, filt_size, stride, pad_off
        self.pad_type = pad_type
        self._options = {"filter-size": filt_size, "stride": stride, "padding": _padding(pad_type),
                         "pad-offset": pad_off}
        self.register_buffer("filt", _binomial_filter(filt_size)[None, None].repeat(channels, 1, 1, 1))
        self._runner = _Runner(self._operator, device)

    _operator = "blur-pool"

    def forward(self, x):
        if x.dim() != 4 or x.shape[1] != self.channels:
            raise ValueError(f"{type(self).__name__}({self.channels}): expected N x {self.channels} x H x W, got {tuple(x.shape)}")
        return _call(self._runner, self._options, _needs_training([x]), {"input": x})[0]


class MaxBlurPool2d(BlurPool):
    """MaxBlurPool: ``nn.Sequential(nn.MaxPool2d(2, 1), BlurPool(...))`` as antialiased_cnns
    builds it, fused in one kernel; the constructor is BlurPool's."""

    _operator = "max-blur-pool"


class AdaptiveBlurPool2d(nn.Module):
    """The content-aware adaptive filter (Zou et al. 2020) with the official module's
    constructor (``in_channels, kernel_size, stride=1, pad_type='reflect', group=2``) and
    submodules ``conv`` and ``bn``: its checkpoints load with ``load_state_dict``.
    ``softmax='per-group'`` normalises each group's filter on its own (the paper's form; the
    official module's is ``'joint'``). Train mode uses batch statistics and updates the running
    ones (momentum 0.1, as BatchNorm2d's default; others are refused), eval mode the running ones.
    """

    def __init__(self, in_channels, kernel_size, stride=1, pad_type="reflect", group=2, softmax="joint", device=None):
        super().__init__()
        self.in_channels, self.kernel_size, self.stride, self.group = in_channels, kernel_size, stride, group
        self.conv = nn.Conv2d(in_channels, group * kernel_size * kernel_size, kernel_size=kernel_size, stride=1,
                              bias=False)
        self.bn = nn.BatchNorm2d(group * kernel_size * kernel_size)
        nn.init.kaiming_normal_(self.conv.weight, mode="fan_out", nonlinearity="relu")
        self._options = {"kernel": kernel_size, "stride": stride, "groups": group, "padding": _padding(pad_type),
                         "softmax": softmax}
        self._runner = _Runner("adaptive-blur-pool", device)

    def forward(self, x):
        bn = self.bn
        if bn.momentum != 0.1 or bn.eps != 1e-5 or not bn.affine or not bn.track_running_stats:
            raise ValueError("AdaptiveBlurPool2d: bn must keep BatchNorm2d's defaults (momentum 0.1, eps 1e-5, affine, "
                             "running statistics)")
        parameters = {"conv.weight": self.conv.weight, "bn.weight": bn.weight, "bn.bias": bn.bias}
        buffers = {"bn.running_mean": bn.running_mean, "bn.running_var": bn.running_var}
        batch = self.training
        training = batch or _needs_training([x, *parameters.values()])
        options = dict(self._options, statistics="batch" if batch else "running")
        results = _call(self._runner, options, training, {"input": x}, parameters, buffers,
                        constant_results=("running_mean", "running_var") if batch else ())
        if batch:
            with torch.no_grad():
                bn.running_mean.copy_(results[1])
                bn.running_var.copy_(results[2])
                bn.num_batches_tracked.add_(1)
        return results[0]


class TIPS(nn.Module):
    """Translation-invariant polyphase sampling (Saha & Gokhale 2025) with the official module's
    constructor and parameters (``conv1``, ``conv2``). ``forward(x)`` returns
    ``(output, psi_x, x_t)`` as the official module does: psi(x) for the L_undo loss (its
    gradient flows back through Nyquist's backward) and x_t, the padded input shifted by a random
    amount drawn with NumPy's global generator as the official module draws it (a constant);
    with ``return_soft_polyphase_indices`` also tau (N x C x 4), whose gradient flows back too.
    The official module's x_t carries gradient into x (its ``x_t.detach()`` result is
    discarded), so a loss between psi_x and x_t also moves x through x_t; this module does the
    same by default (the shift is a PyTorch op), and ``detach_target=True`` makes x_t the
    constant that SPEC.md and the paper describe.
    Stride 2 and 4 phases only; odd sizes are padded by reflection (as SPEC.md says), so
    ``pad_type`` other than ``'reflect'`` is refused for odd sizes.
    """

    def __init__(self, in_channels, num_poly=4, pad_type="reflect", kernel=3, stride=2, max_shift_h=2, max_shift_w=2,
                 transform_type="standard", return_soft_polyphase_indices=False, sanity_check=False, detach_target=False,
                 device=None):
        super().__init__()
        if stride != 2 or num_poly not in (None, 0, 4):
            raise ValueError("TIPS: Nyquist implements stride 2 with 4 phases")
        if transform_type not in ("standard", "circular"):
            raise ValueError(f"TIPS: transform_type {transform_type!r}: use 'standard' or 'circular'")
        self.in_channels, self.kernel, self.stride, self.num_poly = in_channels, kernel, stride, 4
        self.pad_type = _padding(pad_type)
        self.max_shift_h, self.max_shift_w, self.transform_type = max_shift_h, max_shift_w, transform_type
        self.return_soft_polyphase_indices = return_soft_polyphase_indices
        self.detach_target = detach_target
        self.conv1 = nn.Conv2d(in_channels, in_channels, kernel_size=kernel, groups=in_channels,
                               padding=(kernel - 1) // 2, stride=1, bias=False)
        self.conv2 = nn.Conv2d(in_channels, in_channels, kernel_size=1, groups=in_channels, stride=1, bias=False)
        self._runner = _Runner("tips-pool", device)

    def shifted_target(self, x):
        """x_t: the padded input shifted by (dy, dx), each drawn uniformly from
        -max_shift...max_shift with NumPy's global generator, rows first; 'standard' fills the
        vacated rows and columns with zeros, 'circular' wraps."""
        dy = int(np.random.randint(-self.max_shift_h, self.max_shift_h + 1))
        dx = int(np.random.randint(-self.max_shift_w, self.max_shift_w + 1))
        shifted = torch.roll(x, shifts=(dy, dx), dims=(-2, -1))
        if self.transform_type == "standard":
            height, width = x.shape[-2:]
            rows = torch.arange(height, device=x.device) - dy
            columns = torch.arange(width, device=x.device) - dx
            keep = ((rows >= 0) & (rows < height))[:, None] & ((columns >= 0) & (columns < width))[None, :]
            shifted = shifted * keep.to(shifted.dtype)
        return shifted.detach() if self.detach_target else shifted

    def forward(self, x):
        height, width = x.shape[-2:]
        odd_h, odd_w = height % 2, width % 2
        if (odd_h or odd_w) and self.pad_type != "reflect":
            raise ValueError("TIPS: odd sizes are padded by reflection in Nyquist; pad_type must be 'reflect'")
        padded = torch.nn.functional.pad(x, (odd_w, 0, odd_h, 0), mode="reflect") if odd_h or odd_w else x
        x_t = self.shifted_target(padded)
        parameters = {"conv1.weight": self.conv1.weight, "conv2.weight": self.conv2.weight}
        # Always the training forward: psi is one of the results.
        output, psi, tau = _call(self._runner, {"kernel": self.kernel}, True, {"input": x}, parameters,
                                 results=("output", "psi", "tau"))
        if self.return_soft_polyphase_indices:
            return output, psi, x_t, tau
        return output, psi, x_t


class APSPool2d(nn.Module):
    """Adaptive polyphase sampling (Chaman & Dokmanic 2021): one phase per sample, the one with
    the largest norm (``apspool_criterion`` 'l2', 'l1' or 'linf'), after an optional circular
    blur of ``filt_size``. ``forward(x, polyphase_indices=None)`` returns ``(output, indices)``
    (a long tensor of N phases) when ``return_poly_indices``; given indices (a residual
    shortcut's) sample those phases instead of choosing."""

    def __init__(self, channels, filt_size=1, stride=2, apspool_criterion="l2", return_poly_indices=True, device=None):
        super().__init__()
        if stride != 2:
            raise ValueError("APSPool2d: Nyquist implements stride 2")
        self.channels, self.filt_size, self.stride = channels, filt_size, stride
        self.return_poly_indices = return_poly_indices
        self._options = {"filter-size": filt_size, "norm": apspool_criterion}
        self._runner = _Runner("aps-pool", device)

    def forward(self, x, polyphase_indices=None):
        inputs = {"input": x}
        if polyphase_indices is not None:
            inputs["indices"] = polyphase_indices.to(torch.float32)
        output, indices = _call(self._runner, self._options, _needs_training([x]), inputs,
                                constant_results=("indices",))
        indices = indices.to(torch.long)
        return (output, indices) if self.return_poly_indices else output


def _lifting_branch(channels, kernel_size):
    """P or U: depthwise Conv1d (kernel K, same padding, bias) -> ReLU -> depthwise 1x1 Conv1d
    -> Tanh, whose parameters are named as SPEC.md section 4 says (`0.weight`, `2.bias`, ...)."""
    return nn.Sequential(
        nn.Conv1d(channels, channels, kernel_size, padding=kernel_size // 2, groups=channels),
        nn.ReLU(),
        nn.Conv1d(channels, channels, 1, groups=channels),
        nn.Tanh(),
    )


class _LiftParameters(nn.Module):
    def __init__(self, channels, kernel_size, lambda_u, lambda_p, device):
        super().__init__()
        if kernel_size % 2 != 1:
            raise ValueError(f"kernel_size {kernel_size}: LiftPool's predictor and updater need an odd kernel")
        self.channels, self.kernel_size, self.lambda_u, self.lambda_p = channels, kernel_size, lambda_u, lambda_p
        self.predict = _lifting_branch(channels, kernel_size)
        self.update = _lifting_branch(channels, kernel_size)
        self._options = {"kernel": kernel_size, "lambda-u": lambda_u, "lambda-p": lambda_p}
        self._device = device

    def _parameters_by_name(self):
        return {f"{branch}.{index}.{kind}": getattr(getattr(self, branch)[index], kind)
                for branch in ("predict", "update") for index in (0, 2) for kind in ("weight", "bias")}


class LiftDownPool2d(_LiftParameters):
    """LiftDownPool (Zhao & Snoek 2021; the layer internals are SPEC.md's, no official code
    exists): ``forward(x)`` returns the pooled output LL + LH + HL + HH, or with
    ``return_bands`` the tuple ``(output, (ll, lh, hl, hh))``. After a forward with gradients,
    ``self.loss`` holds the regulariser loss lambda_u * c_u + lambda_p * c_p (a 0-dim tensor
    whose gradient flows back: add it to the objective)."""

    _rank = 4
    _bands = ("ll", "lh", "hl", "hh")

    def __init__(self, channels, kernel_size=5, lambda_u=0.01, lambda_p=0.1, return_bands=False, device=None):
        super().__init__(channels, kernel_size, lambda_u, lambda_p, device)
        self.return_bands = return_bands
        self.loss = None
        self._runner = _Runner("lift-down-pool", device)

    def forward(self, x):
        if x.dim() != self._rank:
            raise ValueError(f"{type(self).__name__}: expected a rank-{self._rank} input, got {tuple(x.shape)}")
        parameters = self._parameters_by_name()
        training = _needs_training([x, *parameters.values()])
        results = _call(self._runner, self._options, training, {"input": x}, parameters,
                        results=("output",) + self._bands, scalars=("loss",) if training else ())
        self.loss = results[len(self._bands) + 1] if training else None
        bands = tuple(results[1:len(self._bands) + 1])
        return (results[0], bands) if self.return_bands else results[0]


class LiftDownPool1d(LiftDownPool2d):
    """LiftDownPool on N x C x L; bands ``(s, d)``."""

    _rank = 3
    _bands = ("s", "d")


class LiftUpPool2d(nn.Module):
    """LiftUpPool: the exact inverse of a LiftDownPool2d with the same parameters.
    ``LiftUpPool2d(down)`` uses ``down``'s parameters (tied, not registered twice);
    ``forward(ll, lh, hl, hh, size=None)`` returns the reconstruction of ``size`` (H, W)
    (default twice the bands')."""

    _rank = 4
    _details = ("lh", "hl", "hh")

    def __init__(self, down, device=None):
        super().__init__()
        if not isinstance(down, _LiftParameters):
            raise TypeError("LiftUpPool needs the LiftDownPool whose parameters it inverts")
        self._down = [down]
        self._runner = _Runner("lift-up-pool", device)

    def forward(self, coarse, *details, size=None):
        if len(details) != len(self._details):
            raise ValueError(f"{type(self).__name__}: expected {1 + len(self._details)} bands")
        down = self._down[0]
        options = dict(down._options)
        if size is not None:
            if self._rank == 4:
                options["height"], options["width"] = size
            else:
                options["width"] = size
        parameters = down._parameters_by_name()
        inputs = {"input": coarse, **dict(zip(self._details, details))}
        training = _needs_training([*inputs.values(), *parameters.values()])
        return _call(self._runner, options, training, inputs, parameters)[0]


class LiftUpPool1d(LiftUpPool2d):
    """LiftUpPool on the bands ``(s, d)`` of a LiftDownPool1d; ``size`` is the length."""

    _rank = 3
    _details = ("d",)
