#!/usr/bin/env python3
"""Side-by-side timing of Nyquist's kernels and PyTorch on the same CPU.

Run by hand, not in CI. Installs nothing: it needs `torch`, `kornia` and `antialiased-cnns`
(pip install torch kornia antialiased-cnns) and says so when they are missing.

    swift run -c release nyquist-bench --batch 8 --shapes resnet,odd --json /tmp/nyquist.json
    python3 Benchmarks/compare_pytorch.py --nyquist-json /tmp/nyquist.json --batch 8

For every (operator, pass, shape) row of nyquist-bench's JSON that the filters select it times
the PyTorch version: antialiased_cnns.BlurPool, kornia's MaxBlurPool2D, torch's max/avg pool,
and plain-PyTorch versions of APS, TIPS, LiftDownPool and AdaptiveBlurPool written from
/work/shared/SPEC.md (docs/performance.md says how). Forward is inference (torch.no_grad);
backward is the backward pass alone (the training forward runs before the clock starts, and the
graph is kept with retain_graph so that it can be repeated). Times are the median of --repeats
after one warm-up, host clock, torch.set_num_threads(--threads).

Peak memory: each measurement runs in a fresh worker process. After a forward and backward on a
small 1xCx8x8 input (so PyTorch's one-time lazy set-up is not counted), the worker resets the kernel's
resident-set high-water mark (writing 5 to /proc/self/clear_refs) right before the first call,
then reports VmHWM after the call minus VmRSS before it: the host memory the call needed beyond
its inputs (outputs, autograd buffers, temporaries). Nyquist's column is the device memory the
call allocated beyond what was alive before it (nyquist-bench's "mem MB", from its allocation
high-water mark); with PoCL the device memory is host memory, but the two methods are not the
same measurement (RSS counts pages touched, the device counter counts bytes allocated).

Writes Benchmarks/results/compare-pytorch-<device>.md (or --output).
"""

import argparse
import json
import math
import os
import re
import statistics
import subprocess
import sys
import time

REQUIRED = {"torch": "torch", "kornia": "kornia", "antialiased_cnns": "antialiased-cnns"}


def missing_packages():
    missing = []
    for module, package in REQUIRED.items():
        try:
            __import__(module)
        except ImportError:
            missing.append(package)
    return missing


# ---------------------------------------------------------------------------------------------
# Plain-PyTorch operators, written from SPEC.md (not from the papers' code).


def build_module(op, channels):
    import torch
    import torch.nn.functional as F

    torch.manual_seed(0)
    if op == "max-pool":
        return torch.nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
    if op == "avg-pool":
        return torch.nn.AvgPool2d(kernel_size=2)
    if op == "blur-pool":
        import antialiased_cnns

        return antialiased_cnns.BlurPool(channels, filt_size=4, stride=2)
    if op == "max-blur-pool":
        import kornia

        # kornia pads the blur with its own rule (see SPEC.md section 2); sizes match ours.
        return kornia.filters.MaxBlurPool2D(kernel_size=4, stride=2, max_pool_size=2)

    class APS(torch.nn.Module):
        """SPEC 5: circular pad odd sizes at bottom/right, one phase per sample by the largest l2 norm."""

        def forward(self, x):
            if x.shape[2] % 2 or x.shape[3] % 2:
                x = F.pad(x, (0, x.shape[3] % 2, 0, x.shape[2] % 2), mode="circular")
            phases = torch.stack([x[:, :, 0::2, 0::2], x[:, :, 1::2, 0::2], x[:, :, 0::2, 1::2], x[:, :, 1::2, 1::2]], 1)
            norms = phases.detach().flatten(2).norm(dim=2)
            chosen = norms.argmax(dim=1)
            return phases[torch.arange(x.shape[0]), chosen]

    class TIPS(torch.nn.Module):
        """SPEC 5: reflect pad odd sizes at top/left, psi = ReLU(depthwise conv), quadrant means,
        per-channel scale, softmax over the 4 quadrants weights the 4 phases."""

        def __init__(self, channels, k=3):
            super().__init__()
            self.k = k
            self.conv1 = torch.nn.Parameter(torch.randn(channels, 1, k, k) * 0.3)
            self.conv2 = torch.nn.Parameter(torch.ones(channels, 1, 1, 1))

        def forward(self, x):
            if x.shape[2] % 2 or x.shape[3] % 2:
                x = F.pad(x, (x.shape[3] % 2, 0, x.shape[2] % 2, 0), mode="reflect")
            channels = x.shape[1]
            psi = F.relu(F.conv2d(x, self.conv1, padding=(self.k - 1) // 2, groups=channels))
            h, w = x.shape[2] // 2, x.shape[3] // 2
            q = torch.stack(
                [psi[:, :, :h, :w].mean((2, 3)), psi[:, :, :h, w:].mean((2, 3)),
                 psi[:, :, h:, :w].mean((2, 3)), psi[:, :, h:, w:].mean((2, 3))], 2)
            tau = torch.softmax(q * self.conv2.view(1, channels, 1), dim=2)
            phases = [x[:, :, 0::2, 0::2], x[:, :, 1::2, 0::2], x[:, :, 0::2, 1::2], x[:, :, 1::2, 1::2]]
            return sum(tau[:, :, i, None, None] * phases[i] for i in range(4))

    class LiftDown(torch.nn.Module):
        """SPEC 4: lifting along W then H with shared P and U (depthwise conv K, ReLU, 1x1, Tanh);
        output = LL + LH + HL + HH."""

        def __init__(self, channels, k=5):
            super().__init__()

            def branch():
                return torch.nn.Sequential(
                    torch.nn.Conv1d(channels, channels, k, padding=k // 2, groups=channels), torch.nn.ReLU(),
                    torch.nn.Conv1d(channels, channels, 1, groups=channels), torch.nn.Tanh())

            self.predict, self.update = branch(), branch()

        def lift(self, x, axis):
            # Move the lifted axis last and fold the other spatial axis into the batch.
            x = x.transpose(axis, 3) if axis != 3 else x
            n, c, a, length = x.shape
            if length % 2:
                x = torch.cat([x, x[..., -1:]], 3)
            flat = x.permute(0, 2, 1, 3).reshape(n * a, c, -1)
            even, odd = flat[..., 0::2], flat[..., 1::2]
            d = odd - self.predict(even)
            s = even + self.update(d)

            def unflat(t):
                t = t.reshape(n, a, c, -1).permute(0, 2, 1, 3)
                return t.transpose(axis, 3) if axis != 3 else t

            return unflat(s), unflat(d)

        def forward(self, x):
            s_h, d_h = self.lift(x, 3)
            ll, lh = self.lift(s_h, 2)
            hl, hh = self.lift(d_h, 2)
            return ll + lh + hl + hh

    class AdaptiveBlur(torch.nn.Module):
        """SPEC 3 with the defaults (k 3, stride 2, G gcd(8, C), reflect, joint softmax)."""

        def __init__(self, channels, k=3, stride=2):
            super().__init__()
            self.k, self.stride = k, stride
            self.groups = math.gcd(8, channels)
            self.conv = torch.nn.Conv2d(channels, self.groups * k * k, k, bias=False)
            torch.nn.init.kaiming_normal_(self.conv.weight)
            self.bn = torch.nn.BatchNorm2d(self.groups * k * k)

        def forward(self, x):
            n, c, h, w = x.shape
            k, s, g = self.k, self.stride, self.groups
            xpad = F.pad(x, (k // 2,) * 4, mode="reflect")
            if self.training:
                # BatchNorm statistics over every full-resolution position (SPEC 3).
                z = self.bn(self.conv(xpad))[:, :, ::s, ::s]
            else:
                z = self.bn(F.conv2d(xpad, self.conv.weight, stride=s))
            weights = torch.softmax(z, dim=1)
            oh, ow = weights.shape[2], weights.shape[3]
            patches = F.unfold(xpad, k, stride=s)[..., : oh * ow].view(n, g, c // g, k * k, oh, ow)
            return (patches * weights.view(n, g, 1, k * k, oh, ow)).sum(3).view(n, c, oh, ow)

    if op == "aps-pool":
        return APS()
    if op == "tips-pool":
        return TIPS(channels)
    if op == "lift-down-pool":
        return LiftDown(channels)
    if op == "adaptive-blur-pool":
        return AdaptiveBlur(channels)
    raise SystemExit(f"compare_pytorch: no PyTorch version of {op}")


# ---------------------------------------------------------------------------------------------
# Worker: one measurement in a fresh process.


def memory_kib():
    status = open("/proc/self/status").read()
    return {key: int(re.search(key + r":\s+(\d+)", status).group(1)) for key in ("VmRSS", "VmHWM")}


def reset_high_water_mark():
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
        return True
    except OSError:
        return False


def worker(op, shape, pass_name, repeats, threads):
    import torch

    torch.set_num_threads(threads)
    module = build_module(op, shape[1])
    # One forward and backward on a small input first, so that PyTorch's one-time lazy set-up
    # (thread pools, autograd engine) is not counted as the measured call's memory.
    small = torch.rand(1, shape[1], 8, 8, requires_grad=True)
    module.train()
    module(small).sum().backward()
    module.zero_grad(set_to_none=True)
    x = torch.rand(*shape)
    if pass_name == "forward":
        module.eval()

        def call():
            with torch.no_grad():
                return module(x)

        before = memory_kib()["VmRSS"]
        exact = reset_high_water_mark()
        result = call()
        peak = memory_kib()["VmHWM"] - before
        del result
    else:
        module.train()
        x.requires_grad_(True)
        y = module(x)
        grad = torch.ones_like(y)

        def call():
            x.grad = None
            for parameter in module.parameters():
                parameter.grad = None
            y.backward(grad, retain_graph=True)

        before = memory_kib()["VmRSS"]
        exact = reset_high_water_mark()
        call()
        peak = memory_kib()["VmHWM"] - before
    call()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    print(json.dumps({"ms": statistics.median(times) * 1e3, "peak_bytes": peak * 1024, "exact_peak": exact}))


# ---------------------------------------------------------------------------------------------
# Driver.


def measure(op, shape, pass_name, repeats, threads):
    command = [sys.executable, os.path.abspath(__file__), "--worker", op, ",".join(map(str, shape)), pass_name,
               str(repeats), str(threads)]
    completed = subprocess.run(command, capture_output=True, text=True)
    if completed.returncode != 0:
        return None, completed.stderr.strip().splitlines()[-1] if completed.stderr.strip() else "worker failed"
    return json.loads(completed.stdout.strip().splitlines()[-1]), None


def megabytes(value):
    return "-" if value is None else f"{value / 1e6:.1f}"


def main():
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        _, _, op, shape, pass_name, repeats, threads = sys.argv
        worker(op, [int(v) for v in shape.split(",")], pass_name, int(repeats), int(threads))
        return

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nyquist-json", required=True, help="nyquist-bench --json output")
    parser.add_argument("--batch", default="8", help="batch sizes to compare, comma-separated (default 8)")
    parser.add_argument("--shapes", default="", help="shape names to keep, comma-separated substrings (default all)")
    parser.add_argument("--operators", default="", help="operators to keep, comma-separated (default all)")
    parser.add_argument("--passes", default="forward,backward")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="torch.set_num_threads (default: cores)")
    parser.add_argument("--output", help="Markdown output (default Benchmarks/results/compare-pytorch-<device>.md)")
    arguments = parser.parse_args()

    missing = missing_packages()
    if missing:
        print("compare_pytorch: missing Python packages: " + ", ".join(missing), file=sys.stderr)
        print("install them with: pip install " + " ".join(missing), file=sys.stderr)
        sys.exit(1)
    import torch

    with open(arguments.nyquist_json) as handle:
        nyquist = json.load(handle)
    batches = {int(b) for b in arguments.batch.split(",") if b}
    shape_filters = [s for s in arguments.shapes.split(",") if s]
    operator_filters = {o for o in arguments.operators.split(",") if o}
    passes = {p for p in arguments.passes.split(",") if p}
    rows = [
        row for row in nyquist["rows"]
        if row["shape"][0] in batches and row["pass"] in passes
        and (not operator_filters or row["op"] in operator_filters)
        and (not shape_filters or any(f in row["shape_name"] for f in shape_filters))
    ]
    if not rows:
        sys.exit("compare_pytorch: no rows of the JSON match the filters")

    table = []
    for index, row in enumerate(rows, 1):
        shape = row["shape"]
        label = f"{row['op']} {row['pass']} {'x'.join(map(str, shape))}"
        print(f"[{index}/{len(rows)}] {label}", file=sys.stderr, flush=True)
        result, error = measure(row["op"], shape, row["pass"], arguments.repeats, arguments.threads)
        torch_ms = result["ms"] if result else None
        table.append({
            "op": row["op"], "pass": row["pass"], "shape": "x".join(map(str, shape)),
            "nyquist_ms": row["ms"], "torch_ms": torch_ms,
            "ratio": (torch_ms / row["ms"]) if torch_ms else None,
            "nyquist_bytes": row.get("device_peak_bytes"), "torch_bytes": result["peak_bytes"] if result else None,
            "note": error or ("" if result["exact_peak"] else "peak from ru_maxrss (clear_refs unavailable)"),
        })

    header = ["op", "pass", "shape", "Nyquist ms", "PyTorch ms", "PyTorch / Nyquist", "Nyquist mem MB",
              "PyTorch mem MB", "note"]
    lines = [header] + [[
        r["op"], r["pass"], r["shape"], f"{r['nyquist_ms']:.3f}",
        "-" if r["torch_ms"] is None else f"{r['torch_ms']:.3f}",
        "-" if r["ratio"] is None else f"{r['ratio']:.2f}x",
        megabytes(r["nyquist_bytes"]), megabytes(r["torch_bytes"]), r["note"],
    ] for r in table]
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    for line in lines:
        print("  ".join(cell.ljust(width) for cell, width in zip(line, widths)).rstrip())

    device = nyquist.get("device", "device")
    slug = re.sub(r"[^A-Za-z0-9]+", "-", device).strip("-")
    output = arguments.output or os.path.join(os.path.dirname(os.path.abspath(__file__)), "results",
                                              f"compare-pytorch-{slug}.md")
    cpu = "unknown CPU"
    try:
        cpu = next(l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name"))
    except (OSError, StopIteration):
        pass
    import antialiased_cnns  # noqa: F401  (version below)
    import kornia

    versions = f"torch {torch.__version__}, kornia {kornia.__version__}"
    markdown = [
        f"# Nyquist vs PyTorch on {device}",
        "",
        f"CPU: {cpu}, {os.cpu_count()} cores; PyTorch: {versions}, torch.set_num_threads({arguments.threads}).",
        f"Nyquist: {nyquist.get('device_line', device)}; {nyquist.get('settings', '')}.",
        "",
        "Nyquist ms: kernel time from OpenCL profiling events (nyquist-bench, median of repeats).",
        f"PyTorch ms: host clock, median of {arguments.repeats} after one warm-up; forward under torch.no_grad,",
        "backward = the backward pass alone (graph built before the clock starts, retain_graph).",
        "PyTorch / Nyquist > 1 means Nyquist is faster.",
        "Nyquist mem: device bytes one call allocates beyond what was alive (allocation high-water mark).",
        "PyTorch mem: VmHWM after the first call minus VmRSS before it, high-water mark reset through",
        "/proc/self/clear_refs, in a fresh process per row after one call on a 1xCx8x8 input (so that",
        "PyTorch's lazy set-up is not counted): host memory the call needed beyond its inputs.",
        "blur-pool = antialiased_cnns.BlurPool (filt_size 4); max-blur-pool = kornia MaxBlurPool2D",
        "(kernel_size 4, which pads differently, see SPEC.md 2); max/avg pool = torch.nn; aps, tips,",
        "lift-down and adaptive-blur-pool = plain PyTorch written from SPEC.md in this script.",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "|".join("---" for _ in header) + "|",
    ] + ["| " + " | ".join(line) + " |" for line in lines[1:]]
    os.makedirs(os.path.dirname(output), exist_ok=True)
    with open(output, "w") as handle:
        handle.write("\n".join(markdown) + "\n")
    print(f"wrote {output}", file=sys.stderr)


if __name__ == "__main__":
    main()
