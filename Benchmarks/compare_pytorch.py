#!/usr/bin/env python3
"""Nyquist against PyTorch, side by side in one run, by the host clock on both sides.

Run by hand, not in CI. Installs nothing: it needs `torch` (and uses `antialiased-cnns` and
`kornia` for their forms when they are installed; it says which are missing) and a release build
of nyquist-bench:

    swift build -c release --product nyquist-bench
    python3 Benchmarks/compare_pytorch.py                       # the full table (minutes to hours)
    python3 Benchmarks/compare_pytorch.py --shapes 1x64x56x56 --operators blur-pool,max-pool

Method (docs/performance.md, Method, says the same):

* Nyquist runs in `nyquist-bench --serve`, a child process that times calls of the library's
  public layers (from the operator registry) on request: the call, then clFinish, by the host
  clock. It also reports the kernel-only time of the last call of each burst (the sum of its
  launches' OpenCL profiling-event times), shown as an extra column, never used in the ratio.
* PyTorch runs in this process: forward = inference (module.eval(), torch.no_grad());
  training+backward = the training forward with autograd, then backward from a gradient of ones
  of the main output (plus the regulariser loss where the operator has one, as Nyquist's
  backward adds it), gradients set to None before each call as an optimiser step would leave
  them. torch.set_num_threads(--threads).
* Per row (operator, pass, shape) both sides are warmed up to a steady state: one first call
  (program builds, allocations, autograd set-up), then calls until at least 5 calls and 0.2 s
  of calls have passed. Then --rounds rounds alternate bursts: each PyTorch form's burst, then
  Nyquist's burst, until each side has at least --repeats timed calls. Each burst starts with
  one untimed call (the first call after the other side ran wakes sleeping worker threads). Only one side runs at a
  time (the server waits on its pipe while PyTorch runs, and the reverse).
* Reported: median and quartiles of the timed calls of both sides, and the ratio of the
  medians PyTorch / Nyquist against the fastest PyTorch form that computes the same function in
  that pass (above 1: Nyquist is faster). Forms that compute something else (kornia's zero-padded
  blur; a strided-conv AdaptiveBlurPool in training) are timed or listed for context only.
* Context measured in the same run: the copy bandwidth of a large torch tensor copy, and
  Nyquist's copy kernel on the device.

PyTorch forms: torch.nn max/avg pool; antialiased_cnns.BlurPool, a separable form written from
SPEC.md and kornia's BlurPool2D for blur-pool; nn.MaxPool2d(2, 1) + antialiased_cnns.BlurPool
and kornia's MaxBlurPool2D for max-blur-pool; plain PyTorch written from /work/shared/SPEC.md for
APS, TIPS (a lean form and the official module's form, which also returns psi and the shifted
target), LiftDownPool/LiftUpPool and AdaptiveBlurPool (the official module's full-resolution
form, an exact lean form, and for inference a strided-conv form).
"""

import argparse
import json
import math
import os
import platform
import re
import shlex
import statistics
import subprocess
import sys
import time

DEFAULT_SHAPES = "8x64x112x112,8x256x56x56,8x512x28x28,8x1024x14x14,1x64x56x56,1x256x28x28"
OPERATORS = ["max-pool", "avg-pool", "blur-pool", "max-blur-pool", "aps-pool", "tips-pool", "lift-down-pool",
             "lift-up-pool", "adaptive-blur-pool"]
PASSES = ["forward", "training+backward"]
WARM_UP_CALLS = 5
WARM_UP_SECONDS = 0.2

# The options both sides use, as nyquist-bench's registry spells them.
NYQUIST_OPTIONS = {
    "max-pool": {"kernel": 3, "stride": 2, "pad": 1},
    "avg-pool": {"kernel": 2},
    "blur-pool": {"filter-size": 4, "stride": 2, "padding": "reflect"},
    "max-blur-pool": {"filter-size": 4, "stride": 2, "padding": "reflect"},
    "aps-pool": {"norm": "l2"},
    "tips-pool": {"kernel": 3},
    "lift-down-pool": {"kernel": 5},
    "lift-up-pool": {"kernel": 5},
    "adaptive-blur-pool": {"kernel": 3, "stride": 2, "softmax": "joint"},
}

OPTIONAL = {"antialiased_cnns": "antialiased-cnns", "kornia": "kornia"}


def available(module):
    try:
        __import__(module)
        return True
    except ImportError:
        return False


# ---------------------------------------------------------------------------------------------
# PyTorch forms. Each form is (name, same_function, note, build) where build(shape, training)
# returns (call, inputs) or raises Unavailable. Plain forms are written from SPEC.md.


class Unavailable(Exception):
    pass


def binomial_taps(k):
    row = [math.comb(k - 1, i) for i in range(k)]
    return [v / sum(row) for v in row]


def pads(k):
    # SPEC 2: floor((k-1)/2) before, ceil((k-1)/2) after (asymmetric for even k).
    return (k - 1) // 2, k // 2


def spec_forms(torch, F):
    nn = torch.nn

    class SeparableBlur(nn.Module):
        """SPEC 2 as two depthwise 1-D passes (rows at stride 2, then columns at stride 2)."""

        def __init__(self, channels, k=4, stride=2):
            super().__init__()
            taps = torch.tensor(binomial_taps(k))
            self.register_buffer("rows", taps.view(1, 1, k, 1).repeat(channels, 1, 1, 1))
            self.register_buffer("cols", taps.view(1, 1, 1, k).repeat(channels, 1, 1, 1))
            self.k, self.stride, self.channels = k, stride, channels

        def forward(self, x):
            before, after = pads(self.k)
            x = F.pad(x, (before, after, before, after), mode="reflect")
            x = F.conv2d(x, self.rows, stride=(self.stride, 1), groups=self.channels)
            return F.conv2d(x, self.cols, stride=(1, self.stride), groups=self.channels)

    def circular_even(x):
        if x.shape[2] % 2 or x.shape[3] % 2:
            x = F.pad(x, (0, x.shape[3] % 2, 0, x.shape[2] % 2), mode="circular")
        return x

    class APSStacked(nn.Module):
        """SPEC 5: the four phases stacked, one phase per sample by the largest l2 norm."""

        def forward(self, x):
            x = circular_even(x)
            phases = torch.stack([x[:, :, 0::2, 0::2], x[:, :, 1::2, 0::2], x[:, :, 0::2, 1::2], x[:, :, 1::2, 1::2]], 1)
            chosen = phases.detach().flatten(2).norm(dim=2).argmax(dim=1)
            return phases[torch.arange(x.shape[0]), chosen]

    class APSView(nn.Module):
        """SPEC 5 on a (N, C, h, 2, w, 2) view: no copy of the phases, one gather of the chosen one."""

        def forward(self, x):
            x = circular_even(x)
            n, c, h, w = x.shape
            x6 = x.unflatten(2, (h // 2, 2)).unflatten(4, (w // 2, 2))
            with torch.no_grad():
                # Phase k = row offset + 2 * column offset, so that ties keep the lowest k.
                norms = x6.square().sum((1, 2, 4)).transpose(1, 2).reshape(n, 4)
                chosen = norms.argmax(dim=1)
            return x6[torch.arange(n), :, :, chosen % 2, :, chosen // 2]

    class TIPS(nn.Module):
        """SPEC 5. lean: the output only. official: the official module's results (output, psi
        and the shifted target x_t, a random circular shift of the padded input drawn on every
        call, as the module does in training and evaluation)."""

        def __init__(self, channels, k=3, official=False, max_shift=2):
            super().__init__()
            self.k, self.official, self.max_shift = k, official, max_shift
            generator = torch.Generator().manual_seed(0)
            self.conv1 = nn.Parameter(torch.randn(channels, 1, k, k, generator=generator) * 0.3)
            self.conv2 = nn.Parameter(torch.ones(channels, 1, 1, 1))
            self.shifts = torch.Generator().manual_seed(1)

        def forward(self, x):
            if x.shape[2] % 2 or x.shape[3] % 2:
                x = F.pad(x, (x.shape[3] % 2, 0, x.shape[2] % 2, 0), mode="reflect")
            n, c, h, w = x.shape
            psi = F.relu(F.conv2d(x, self.conv1, padding=(self.k - 1) // 2, groups=c))
            quadrants = F.adaptive_avg_pool2d(psi, 2).reshape(n, c, 4)
            tau = torch.softmax(quadrants * self.conv2.view(1, c, 1), dim=2)
            # tau_k weights phase k = (row offset r, column offset c) with k = r + 2c.
            weights = tau.view(n, c, 2, 2).transpose(2, 3).reshape(n, c, 1, 2, 1, 2)
            y = (x.unflatten(2, (h // 2, 2)).unflatten(4, (w // 2, 2)) * weights).sum((3, 5))
            if not self.official:
                return y
            dy, dx = (int(v) for v in torch.randint(-self.max_shift, self.max_shift + 1, (2,), generator=self.shifts))
            return y, psi, torch.roll(x, (dy, dx), (2, 3))

    def lift_branch(channels, k):
        return nn.Sequential(
            nn.Conv1d(channels, channels, k, padding=k // 2, groups=channels), nn.ReLU(),
            nn.Conv1d(channels, channels, 1, groups=channels), nn.Tanh())

    def branch_2d(branch, x, axis):
        """A lifting branch (Conv1d K, ReLU, Conv1d 1, Tanh) along `axis` (3: W, 2: H) of a 4-D
        tensor, as depthwise 2-D convolutions with a 1-D kernel: no transposes."""
        conv, _, pointwise, _ = branch
        k = conv.weight.shape[2]
        shape = (1, k) if axis == 3 else (k, 1)
        padding = (0, k // 2) if axis == 3 else (k // 2, 0)
        c = x.shape[1]
        z = F.relu(F.conv2d(x, conv.weight.view(c, 1, *shape), conv.bias, padding=padding, groups=c))
        return torch.tanh(z * pointwise.weight.view(1, c, 1, 1) + pointwise.bias.view(1, c, 1, 1))

    class LiftDown(nn.Module):
        """SPEC 4: lifting along W then H with shared P and U; output LL + LH + HL + HH. In
        training also the regulariser loss lambda_u * sum c_u + lambda_p * sum c_p."""

        def __init__(self, channels, k=5, lambda_u=0.01, lambda_p=0.1):
            super().__init__()
            torch.manual_seed(0)
            self.predict, self.update = lift_branch(channels, k), lift_branch(channels, k)
            self.lambda_u, self.lambda_p = lambda_u, lambda_p

        def lift(self, x, axis):
            if x.shape[axis] % 2:
                x = torch.cat([x, x.narrow(axis, x.shape[axis] - 1, 1)], axis)
            even, odd = x.unflatten(axis, (-1, 2)).unbind(axis + 1)
            d = odd - branch_2d(self.predict, even, axis)
            s = even + branch_2d(self.update, d, axis)
            cost = self.lambda_u * (s - odd).square().mean() + self.lambda_p * d.square().mean()
            return s, d, cost

        def forward(self, x):
            s_h, d_h, cost_h = self.lift(x, 3)
            ll, lh, cost_l = self.lift(s_h, 2)
            hl, hh, cost_hh = self.lift(d_h, 2)
            y = ll + lh + hl + hh
            return (y, cost_h + cost_l + cost_hh) if self.training else y

    class LiftUp(nn.Module):
        """SPEC 4, the inverse: vertical liftings undone ((LL, LH) -> s_h, (HL, HH) -> d_h), then
        the horizontal one; interleaved back to 2h x 2w."""

        def __init__(self, channels, k=5):
            super().__init__()
            torch.manual_seed(0)
            self.predict, self.update = lift_branch(channels, k), lift_branch(channels, k)
            # The rebuilt map's size: an odd size drops the sample the forward padded.
            self.target = None

        def unlift(self, s, d, axis):
            even = s - branch_2d(self.update, d, axis)
            odd = d + branch_2d(self.predict, even, axis)
            return torch.stack([even, odd], axis + 1).flatten(axis, axis + 1)

        def forward(self, ll, lh, hl, hh):
            x = self.unlift(self.unlift(ll, lh, 2), self.unlift(hl, hh, 2), 3)
            return x if self.target is None else x[:, :, : self.target[0], : self.target[1]]

    class Adaptive(nn.Module):
        """SPEC 3 (k 3, stride 2, G = gcd(8, C), reflect, joint softmax). official: the official
        module's form (predictor and filtering at every full-resolution position through unfold,
        then every s-th row and column kept). exact: the predictor (conv and BatchNorm) at full
        resolution, so that training takes the same batch statistics, then softmax and filtering
        at output positions only. strided: the predictor as a strided conv at output positions
        only (exact in inference; in training its batch statistics differ)."""

        def __init__(self, channels, form, k=3, stride=2):
            super().__init__()
            torch.manual_seed(0)
            self.k, self.stride, self.form = k, stride, form
            self.groups = math.gcd(8, channels)
            self.conv = nn.Conv2d(channels, self.groups * k * k, k, bias=False)
            nn.init.kaiming_normal_(self.conv.weight, mode="fan_out", nonlinearity="relu")
            self.bn = nn.BatchNorm2d(self.groups * k * k)

        def forward(self, x):
            n, c, h, w = x.shape
            k, s, g = self.k, self.stride, self.groups
            xpad = F.pad(x, (k // 2,) * 4, mode="reflect")
            if self.form == "official":
                weights = torch.softmax(self.bn(self.conv(xpad)), dim=1)
                patches = F.unfold(xpad, k).view(n, g, c // g, k * k, h, w)
                y = (patches * weights.unflatten(1, (g, k * k)).unsqueeze(2)).sum(3).flatten(1, 2)
                return y[:, :, ::s, ::s]
            if self.form == "exact":
                z = self.bn(self.conv(xpad))[:, :, ::s, ::s]
            else:
                z = self.bn(F.conv2d(xpad, self.conv.weight, stride=s))
            weights = torch.softmax(z, dim=1)
            oh, ow = weights.shape[2], weights.shape[3]
            patches = F.unfold(xpad, k, stride=s).view(n, g, c // g, k * k, oh, ow)
            return (patches * weights.unflatten(1, (g, k * k)).unsqueeze(2)).sum(3).flatten(1, 2)

    return {"SeparableBlur": SeparableBlur, "APSStacked": APSStacked, "APSView": APSView, "TIPS": TIPS,
            "LiftDown": LiftDown, "LiftUp": LiftUp, "Adaptive": Adaptive}


def pytorch_forms(op, torch, F, classes):
    """(name, same_function, note, make_module(channels)) for each PyTorch form of `op`; the
    module's forward takes the operator's inputs."""
    nn = torch.nn
    have_aa, have_kornia = available("antialiased_cnns"), available("kornia")

    def need(flag, package):
        if not flag:
            raise Unavailable(f"{package} is not installed")

    def aa_blur(c):
        need(have_aa, "antialiased-cnns")
        import antialiased_cnns
        return antialiased_cnns.BlurPool(c, filt_size=4, stride=2)

    def kornia_blur(c):
        need(have_kornia, "kornia")
        import kornia
        return kornia.filters.BlurPool2D(kernel_size=4, stride=2)

    def kornia_max_blur(c):
        need(have_kornia, "kornia")
        import kornia
        return kornia.filters.MaxBlurPool2D(kernel_size=4, stride=2, max_pool_size=2)

    kornia_note = "kornia pads with zeros, symmetrically (SPEC.md 2): same cost, other border values; not an anchor"
    if op == "max-pool":
        return [("torch.nn.MaxPool2d(3, 2, 1)", True, "", lambda c: nn.MaxPool2d(3, 2, 1))]
    if op == "avg-pool":
        return [("torch.nn.AvgPool2d(2)", True, "", lambda c: nn.AvgPool2d(2))]
    if op == "blur-pool":
        return [
            ("antialiased_cnns.BlurPool(C, 4, 2)", True, "", aa_blur),
            ("separable conv (SPEC.md 2)", True, "", lambda c: classes["SeparableBlur"](c)),
            ("kornia BlurPool2D(4, 2)", False, kornia_note, kornia_blur),
        ]
    if op == "max-blur-pool":
        return [
            ("MaxPool2d(2, 1) + antialiased_cnns.BlurPool", True, "",
             lambda c: nn.Sequential(nn.MaxPool2d(2, 1), aa_blur(c))),
            ("MaxPool2d(2, 1) + separable conv (SPEC.md 2)", True, "",
             lambda c: nn.Sequential(nn.MaxPool2d(2, 1), classes["SeparableBlur"](c))),
            ("kornia MaxBlurPool2D(4, 2, 2)", False, kornia_note, kornia_max_blur),
        ]
    if op == "aps-pool":
        return [("stacked phases (SPEC.md 5)", True, "", lambda c: classes["APSStacked"]()),
                ("strided view, one gather (SPEC.md 5)", True, "", lambda c: classes["APSView"]())]
    if op == "tips-pool":
        return [("lean, output only (SPEC.md 5)", True, "", lambda c: classes["TIPS"](c)),
                ("official module's form: output, psi, x_t (SPEC.md 5)", True, "",
                 lambda c: classes["TIPS"](c, official=True))]
    if op == "lift-down-pool":
        return [("1-D kernels as depthwise conv2d (SPEC.md 4)", True, "", lambda c: classes["LiftDown"](c))]
    if op == "lift-up-pool":
        return [("1-D kernels as depthwise conv2d (SPEC.md 4)", True, "", lambda c: classes["LiftUp"](c))]
    if op == "adaptive-blur-pool":
        strided_note = ("same inference output; in training its BatchNorm statistics come from output positions "
                        "only, a different function: an inference anchor, not a training anchor")
        return [
            ("official module's form: full resolution, unfold (SPEC.md 3)", True, "",
             lambda c: classes["Adaptive"](c, "official")),
            ("exact lean: full-resolution predictor, filtering at outputs (SPEC.md 3)", True, "",
             lambda c: classes["Adaptive"](c, "exact")),
            ("strided conv predictor (SPEC.md 3)", "inference", strided_note,
             lambda c: classes["Adaptive"](c, "strided")),
        ]
    raise Unavailable(f"no PyTorch form of {op}")


def make_pytorch_call(torch, module, op, shape, pass_name, device, layout="nchw"):
    """The call to time: inference under no_grad, or the training forward then backward. With
    layout channels_last the inputs and the module's 4-D weights are in that memory format."""
    generator = torch.Generator().manual_seed(0)
    count = 4 if op == "lift-up-pool" else 1
    bands = [torch.rand(*shape, generator=generator).to(device) for _ in range(count)]
    module = module.to(device)
    if layout == "channels_last":
        bands = [band.contiguous(memory_format=torch.channels_last) for band in bands]
        module = module.to(memory_format=torch.channels_last)
    synchronize = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    if pass_name == "forward":
        module.eval()

        def call():
            with torch.no_grad():
                module(*bands)
            synchronize()

        return call
    module.train()
    for band in bands:
        band.requires_grad_(True)
    parameters = list(module.parameters())
    gradient = {}

    def call():
        for tensor in bands + parameters:
            tensor.grad = None
        result = module(*bands)
        loss = None
        if isinstance(result, tuple):
            # TIPS's official form: only the output takes a gradient (Nyquist's backward is given
            # only the output's); LiftDown: the regulariser loss, which Nyquist's backward adds.
            result, loss = (result[0], result[1]) if op == "lift-down-pool" else (result[0], None)
        if "ones" not in gradient:
            gradient["ones"] = torch.ones_like(result)
        if loss is None:
            result.backward(gradient["ones"])
        else:
            torch.autograd.backward([result, loss], [gradient["ones"], None])
        synchronize()

    return call


# ---------------------------------------------------------------------------------------------
# The Nyquist server.


class Server:
    def __init__(self, executable, device):
        command = [executable, "--serve"] + (["--device", device] if device else [])
        self.process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1)

    def ask(self, request):
        self.process.stdin.write(json.dumps(request) + "\n")
        self.process.stdin.flush()
        line = self.process.stdout.readline()
        if not line:
            raise SystemExit(f"compare_pytorch: nyquist-bench --serve ended (status {self.process.poll()})")
        return json.loads(line)

    def close(self):
        self.process.stdin.close()
        self.process.wait(timeout=60)


# ---------------------------------------------------------------------------------------------
# Measurement.


def spread(samples):
    ordered = sorted(samples)
    q1, median, q3 = statistics.quantiles(ordered, n=4, method="inclusive") if len(ordered) > 1 else ordered * 3
    return median, q1, q3


def warm_up(call_seconds, limit):
    """First call, then calls until WARM_UP_CALLS calls and WARM_UP_SECONDS have passed. Returns
    the warm-up calls' seconds, or raises TooSlow when one steady call takes more than `limit`."""
    first = call_seconds()
    times = []
    while len(times) < WARM_UP_CALLS or sum(times) < WARM_UP_SECONDS:
        times.append(call_seconds())
        if times[-1] > limit:
            raise TooSlow(f"one call took {times[-1]:.1f} s (first {first:.1f} s), over --max-call-seconds {limit:g}")
    return times


class TooSlow(Exception):
    pass


def torch_seconds(call):
    start = time.perf_counter()
    call()
    return time.perf_counter() - start


def measure_row(server, torch, F, classes, op, pass_name, shape, arguments):
    """Times every PyTorch form and Nyquist on one row, alternating bursts. Returns the row."""
    channels = shape[1]
    request = {"op": op, "pass": pass_name, "shape": shape, "options": dict(NYQUIST_OPTIONS[op])}
    if op == "lift-up-pool":
        # The row's shape is the map LiftUpPool rebuilds; its inputs are the bands.
        request["shape"] = [shape[0], shape[1], (shape[2] + 1) // 2, (shape[3] + 1) // 2]
        request["options"].update({"height": shape[2], "width": shape[3]})
    row = {"op": op, "pass": pass_name, "shape": "x".join(map(str, shape)), "forms": [], "notes": []}

    forms = []
    candidates = [(name if layout == "nchw" else f"{name} [channels_last]", layout, same, note, make)
                  for layout in arguments.layouts for name, same, note, make in pytorch_forms(op, torch, F, classes)]
    for name, layout, same, note, make in candidates:
        valid = same is True or (same == "inference" and pass_name == "forward")
        if same == "inference" and pass_name != "forward":
            row["forms"].append({"name": name, "same": False, "note": note, "skipped": "not timed in training"})
            continue
        try:
            module = make(channels)
            if op == "lift-up-pool":
                module.target = (shape[2], shape[3])
            call = make_pytorch_call(torch, module, op, request["shape"], pass_name, arguments.torch_device, layout)
            warm_up(lambda: torch_seconds(call), arguments.max_call_seconds)
        except Unavailable as error:
            row["forms"].append({"name": name, "same": valid, "note": note, "skipped": str(error)})
            continue
        except (TooSlow, RuntimeError, ValueError) as error:
            # TooSlow, or PyTorch refusing the shape (reflect padding wider than the map).
            row["forms"].append({"name": name, "same": valid, "note": note,
                                 "skipped": str(error).strip().splitlines()[0]})
            continue
        forms.append({"name": name, "layout": layout, "same": valid, "note": note, "call": call, "ms": []})

    # Nyquist's warm-up, driven from here so that a call too slow to time is found after one
    # call instead of after the server's own warm-up.
    def nyquist_seconds():
        answer = server.ask(dict(request, calls=1, warmup_calls=0, warmup_seconds=0))
        if "error" in answer:
            raise RuntimeError(answer["error"])
        return answer["host_ms"][0] * 1e-3

    nyquist = {"ms": [], "kernel_ms": [], "launches": None}
    try:
        warm_up(nyquist_seconds, arguments.max_call_seconds)
    except (RuntimeError, TooSlow) as error:
        row["notes"].append(f"Nyquist: {error}")
        nyquist = None

    burst = math.ceil(arguments.repeats / arguments.rounds)
    rounds = math.ceil(arguments.repeats / burst)
    # Each burst starts with one untimed call: the first call after the other side ran finds
    # its worker threads asleep and its caches cold (on the PoCL CPU device and on PyTorch's CPU
    # threads alike): a cost of the switch, not of the operator.
    for _ in range(rounds):
        for form in forms:
            form["call"]()
            for _ in range(burst):
                form["ms"].append(torch_seconds(form["call"]) * 1e3)
        if nyquist is not None:
            answer = server.ask(dict(request, calls=burst + 1))
            if "error" in answer:
                row["notes"].append(f"Nyquist: {answer['error']}")
                nyquist = None
                continue
            nyquist["ms"] += answer["host_ms"][1:]
            nyquist["kernel_ms"].append(answer["kernel_only_ms"])
            nyquist["launches"] = answer["launches"]
    server.ask({"command": "clear"})

    for form in forms:
        form.pop("call")
        form["median"], form["q1"], form["q3"] = spread(form["ms"])
        row["forms"].append(form)
    row["nyquist"] = nyquist
    if nyquist is not None:
        nyquist["median"], nyquist["q1"], nyquist["q3"] = spread(nyquist["ms"])
        nyquist["kernel_median"] = statistics.median(nyquist["kernel_ms"])
    for layout in ("nchw", "channels_last"):
        anchors = [f for f in row["forms"] if f["same"] and "median" in f and f.get("layout") == layout]
        row["anchor" if layout == "nchw" else "anchor_cl"] = min(anchors, key=lambda f: f["median"]) if anchors else None
    return row


def copy_bandwidth(torch, device, elements=1 << 26):
    """GB/s (bytes read + written) of dst.copy_(src) on a large tensor, median of 20 after warm-up."""
    source = torch.rand(elements, device=device)
    destination = torch.empty_like(source)
    synchronize = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)

    def call():
        destination.copy_(source)
        synchronize()

    warm_up(lambda: torch_seconds(call), float("inf"))
    median = statistics.median(torch_seconds(call) for _ in range(20))
    return 8 * elements / median / 1e9


# ---------------------------------------------------------------------------------------------
# Report.


def ms(value):
    return "-" if value is None else f"{value:.3f}"


def markdown_table(header, rows):
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    return lines + ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]


def report(rows, context, arguments):
    main_header = ["op", "pass", "shape", "PyTorch form (fastest same function, NCHW)", "PyTorch ms", "PyTorch q1-q3",
                   "Nyquist ms", "Nyquist q1-q3", "PyTorch / Nyquist", "Nyquist kernel-only ms (not host clock)",
                   "PyTorch channels_last ms (fastest form)", "channels_last / Nyquist"]
    main_rows = []
    form_rows = []
    notes = []
    for row in rows:
        anchor, nyquist = row["anchor"], row["nyquist"]
        ratio = anchor["median"] / nyquist["median"] if anchor and nyquist else None
        last = row["anchor_cl"]
        last_ratio = last["median"] / nyquist["median"] if last and nyquist else None
        main_rows.append([
            row["op"], row["pass"], row["shape"], anchor["name"] if anchor else "-",
            ms(anchor["median"]) if anchor else "-", f"{ms(anchor['q1'])}-{ms(anchor['q3'])}" if anchor else "-",
            ms(nyquist["median"]) if nyquist else "-", f"{ms(nyquist['q1'])}-{ms(nyquist['q3'])}" if nyquist else "-",
            f"{ratio:.2f}x" if ratio else "-", ms(nyquist["kernel_median"]) if nyquist else "-",
            ms(last["median"]) if last else "-", f"{last_ratio:.2f}x" if last_ratio else "-",
        ])
        for form in row["forms"]:
            timed = "median" in form
            form_ratio = form["median"] / nyquist["median"] if timed and nyquist else None
            form_rows.append([
                row["op"], row["pass"], row["shape"], form["name"], "yes" if form["same"] else "no",
                ms(form["median"]) if timed else "-", f"{ms(form['q1'])}-{ms(form['q3'])}" if timed else "-",
                len(form["ms"]) if timed else 0, f"{form_ratio:.2f}x" if form_ratio else "-",
                form.get("skipped") or form["note"],
            ])
        notes += [f"{row['op']} {row['pass']} {row['shape']}: {note}" for note in row["notes"]]
    lines = [
        f"# Nyquist vs PyTorch on {context['device']}",
        "",
        "Command:",
        "",
        "    " + context["command"],
        "",
        f"Repository: {context['commit']}. Nyquist device: {context['device_line']}.",
        f"Host: {context['cpu']}, {os.cpu_count()} logical CPUs; Python {platform.python_version()}; "
        f"{context['versions']}; torch.set_num_threads({arguments.threads}), PyTorch device {arguments.torch_device}.",
        "",
        f"Copy bandwidth in this run (bytes read + written): torch copy_ of a {context['copy_mib']:.0f} MiB tensor "
        f"{context['torch_copy']:.1f} GB/s; Nyquist's copy kernel (profiling events) {context['nyquist_copy']:.1f} GB/s.",
        "",
        "Method: both sides by the host clock, call to completion (Nyquist: the public layer's call then "
        "clFinish, in nyquist-bench --serve; PyTorch: the module call). Each side warmed up to a steady state "
        f"(the first call, then at least {WARM_UP_CALLS} calls and {WARM_UP_SECONDS} s of calls), then "
        f"{arguments.rounds} rounds of alternating bursts (every PyTorch form, then Nyquist) until each has at "
        f"least {arguments.repeats} timed calls, each burst after one untimed call; median and quartiles "
        "(q1-q3) of the timed calls. forward = inference "
        "(PyTorch: eval() and no_grad); training+backward = training forward then backward from a gradient of "
        "ones of the output (LiftDownPool: plus its regulariser loss, as Nyquist's backward adds it). "
        "PyTorch / Nyquist > 1 means Nyquist is faster; the ratio uses the fastest PyTorch form that computes "
        "the same function in that pass. Nyquist kernel-only: the sum of the OpenCL profiling-event times of "
        "the last call's kernels (median over the bursts): device time without host overhead, not comparable "
        "with the host-clock columns. The main ratio compares NCHW-contiguous PyTorch forms (the layout "
        "Nyquist takes, the same input bytes); the channels_last columns give the fastest same-function form "
        "with its inputs and 4-D weights in channels_last memory format, as a channels_last network keeps "
        "them (the conversion is not timed). AdaptiveBlurPool's strided-conv form is an inference anchor only: in "
        "training its BatchNorm statistics come from the output positions, not all positions (SPEC.md 3).",
        "",
    ] + markdown_table(main_header, main_rows) + [
        "",
        "## Every PyTorch form",
        "",
    ] + markdown_table(["op", "pass", "shape", "PyTorch form", "same function", "ms", "q1-q3", "calls",
                        "PyTorch / Nyquist", "note"], form_rows)
    if notes or context["missing"]:
        lines += ["", "## Notes", ""]
        lines += [f"- not installed: {package} (its forms are skipped)" for package in context["missing"]]
        lines += [f"- {note}" for note in notes]
    return "\n".join(lines) + "\n"


def git_commit(root):
    try:
        commit = subprocess.run(["git", "-C", root, "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", root, "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, check=True).stdout.strip()
        return commit + (" with uncommitted changes" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown commit"


def parse_shape(text):
    sizes = text.lower().split("x")
    if len(sizes) != 4 or not all(size.isdigit() and int(size) > 0 for size in sizes):
        raise argparse.ArgumentTypeError(f"shape {text!r} is not NxCxHxW")
    return [int(size) for size in sizes]


def main():
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shapes", default=DEFAULT_SHAPES, help=f"NxCxHxW, comma-separated (default {DEFAULT_SHAPES})")
    parser.add_argument("--operators", default=",".join(OPERATORS), help="comma-separated (default: all)")
    parser.add_argument("--passes", default=",".join(PASSES), help="forward,training+backward (default both)")
    parser.add_argument("--repeats", type=int, default=20, help="timed calls per side and row, at least 20")
    parser.add_argument("--rounds", type=int, default=4, help="alternating bursts per row (default 4)")
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads (default 2)")
    parser.add_argument("--layouts", default="nchw,channels_last",
                        help="PyTorch memory formats to time: nchw, channels_last (default both)")
    parser.add_argument("--max-call-seconds", type=float, default=10.0,
                        help="skip a side whose warm call takes longer than this (default 10)")
    parser.add_argument("--device", help="Nyquist device (index or name substring; default as nyquist-bench)")
    parser.add_argument("--torch-device", default="cpu", help="PyTorch device (default cpu; cuda synchronises)")
    parser.add_argument("--nyquist-bench", default=os.path.join(root, ".build", "release", "nyquist-bench"))
    parser.add_argument("--output", help="Markdown output (default Benchmarks/results/compare-pytorch-<device>.md)")
    arguments = parser.parse_args()

    if arguments.repeats < 20:
        parser.error("--repeats must be at least 20")
    if arguments.rounds < 1 or arguments.rounds > arguments.repeats:
        parser.error("--rounds must be from 1 to --repeats")
    try:
        shapes = [parse_shape(text) for text in arguments.shapes.split(",") if text]
    except argparse.ArgumentTypeError as error:
        parser.error(str(error))
    operators = [o for o in arguments.operators.split(",") if o]
    unknown = [o for o in operators if o not in OPERATORS]
    if unknown:
        parser.error(f"unknown operators {', '.join(unknown)}; choose from {', '.join(OPERATORS)}")
    arguments.layouts = [layout for layout in arguments.layouts.split(",") if layout]
    if not arguments.layouts or not set(arguments.layouts) <= {"nchw", "channels_last"}:
        parser.error("--layouts takes nchw, channels_last")
    passes = [p for p in arguments.passes.split(",") if p]
    if not set(passes) <= set(PASSES):
        parser.error(f"--passes takes {', '.join(PASSES)}")

    if not available("torch"):
        sys.exit("compare_pytorch: torch is not installed (pip install torch); nothing to compare with")
    missing = [package for module, package in OPTIONAL.items() if not available(module)]
    for package in missing:
        print(f"compare_pytorch: {package} is not installed; its forms are skipped (pip install {package})",
              file=sys.stderr)
    if not os.access(arguments.nyquist_bench, os.X_OK):
        sys.exit(f"compare_pytorch: no nyquist-bench at {arguments.nyquist_bench}; build it with "
                 "`swift build -c release --product nyquist-bench` or pass --nyquist-bench")

    import torch
    import torch.nn.functional as F

    torch.set_num_threads(arguments.threads)
    classes = spec_forms(torch, F)
    server = Server(arguments.nyquist_bench, arguments.device)
    info = server.ask({"command": "info"})
    if "error" in info:
        sys.exit(f"compare_pytorch: nyquist-bench --serve: {info['error']}")

    copy_elements = 1 << 26
    torch_copy = copy_bandwidth(torch, arguments.torch_device, copy_elements)
    nyquist_copy = server.ask({"command": "copy", "shape": [copy_elements], "calls": 20})
    if "error" in nyquist_copy:
        sys.exit(f"compare_pytorch: nyquist-bench --serve copy: {nyquist_copy['error']}")

    rows = []
    total = len(shapes) * len(operators) * len(passes)
    for shape in shapes:
        for op in operators:
            for pass_name in passes:
                label = f"{op} {pass_name} {'x'.join(map(str, shape))}"
                print(f"[{len(rows) + 1}/{total}] {label}", file=sys.stderr, flush=True)
                row = measure_row(server, torch, F, classes, op, pass_name, shape, arguments)
                rows.append(row)
                nyquist = row["nyquist"]
                for key in ("anchor", "anchor_cl"):
                    if row[key] and nyquist:
                        print(f"    PyTorch {row[key]['median']:.3f} ms ({row[key]['name']}), Nyquist "
                              f"{nyquist['median']:.3f} ms, ratio {row[key]['median'] / nyquist['median']:.2f}x",
                              file=sys.stderr, flush=True)
    server.close()

    versions = [f"torch {torch.__version__}"]
    for module in OPTIONAL:
        if available(module):
            versions.append(f"{module} {getattr(__import__(module), '__version__', 'unknown version')}")
    cpu = platform.processor() or "unknown CPU"
    try:
        with open("/proc/cpuinfo") as handle:
            cpu = next(line.split(":", 1)[1].strip() for line in handle if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    context = {
        "device": info["device"], "device_line": info["device_line"], "command": shlex.join(["python3"] + sys.argv),
        "commit": git_commit(root), "cpu": cpu, "versions": ", ".join(versions), "missing": missing,
        "torch_copy": torch_copy, "nyquist_copy": nyquist_copy["gb_per_s"], "copy_mib": copy_elements * 4 / 2**20,
    }
    text = report(rows, context, arguments)
    print(text)
    slug = re.sub(r"[^A-Za-z0-9]+", "-", info["device"]).strip("-")
    output = arguments.output or os.path.join(root, "Benchmarks", "results", f"compare-pytorch-{slug}.md")
    os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
    with open(output, "w") as handle:
        handle.write(text)
    print(f"wrote {output}", file=sys.stderr)


if __name__ == "__main__":
    main()
