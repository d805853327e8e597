#!/usr/bin/env python3
"""Per-call cost of Nyquist's Python paths against its Swift path, on the same device.

Run by hand, not in CI; installs nothing. Needs numpy, torch (for the nyquist.torch rows and
the PyTorch row), pyopencl (for the zero-copy row) and a release build of the library and of
nyquist-bench:

    swift build -c release --product NyquistC && swift build -c release --product nyquist-bench
    NYQUIST_LIBRARY=.build/release/libNyquistC.so python3 Benchmarks/python_overhead.py

Rows, each a blur-pool (k=4, stride 2, reflect) forward or forward+backward of one shape:
- swift: nyquist-bench --host (the layer called on device tensors, then clFinish; its own
  warm-up and median of 20), run as a subprocess right before the Python rows of that shape;
- pyopencl: the C API on pyopencl arrays (nyquist_run / nyquist_backward_run on cl_mem, the
  layer made once), then queue.finish(): what ctypes adds to the Swift path;
- numpy: the C API on host arrays (nyquist_run_host: upload, run, read back), layer made once;
- nyquist.torch: nyquist.torch.BlurPool on a CPU tensor (the PyTorch module path: autograd
  Function, host arrays, new output tensors);
- pytorch: antialiased_cnns.BlurPool on the same tensor, for scale (not a Nyquist path).
The Python rows run round-robin, one call each per round, after a warm-up of at least 5 calls
and 0.2 s each; the figure is the median of --repeats rounds with the quartiles. Host clock
(time.perf_counter) around each call to completion.

Writes a Markdown table to --output.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "python"))


def quantiles(samples):
    ordered = sorted(samples)
    q1, _, q3 = statistics.quantiles(ordered, n=4)
    return statistics.median(ordered), q1, q3


def swift_rows(bench, shape, repeats):
    """nyquist-bench --host's forward and backward rows for blur-pool at `shape` (ms)."""
    with tempfile.NamedTemporaryFile(suffix=".json") as output:
        subprocess.run([bench, "--host", "--operators", "blur-pool", "--shapes", "x".join(map(str, shape)),
                        "--repeats", str(repeats), "--json", output.name], check=True, stdout=subprocess.DEVNULL)
        rows = json.load(open(output.name))["rows"]
    return {row["pass"]: (row["host_ms"], row["host_q1_ms"], row["host_q3_ms"]) for row in rows}


def python_calls(shape):
    """name -> (forward call, forward+backward call), each running to completion."""
    import nyquist
    from nyquist import _Layer

    rng = np.random.default_rng(0)
    x = rng.standard_normal(shape).astype(np.float32)
    calls = {}

    layer = _Layer("blur-pool", shape, None, {}, None)
    output_shape = layer.shape("output")
    y = np.empty(output_shape, np.float32)
    gy = rng.standard_normal(output_shape).astype(np.float32)
    gx = np.empty(shape, np.float32)

    def numpy_forward():
        layer.forward({"input": x}, {"output": y}, training=False)

    def numpy_training():
        saved = layer.forward({"input": x}, {"output": y}, training=True)
        layer.backward(saved, {"output": gy}, {}, {"input": gx})

    calls["numpy (C API, host arrays)"] = (numpy_forward, numpy_training)

    try:
        import pyopencl as cl
        import pyopencl.array as cl_array
    except ImportError:
        print("pyopencl not installed: no zero-copy row", file=sys.stderr)
    else:
        context = cl.create_some_context(interactive=False)
        queue = cl.CommandQueue(context)
        device_layer = _Layer("blur-pool", shape, None, {}, queue)
        x_cl, y_cl = cl_array.to_device(queue, x), cl_array.empty(queue, output_shape, np.float32)
        gy_cl, gx_cl = cl_array.to_device(queue, gy), cl_array.empty(queue, shape, np.float32)

        def cl_forward():
            device_layer.forward_cl({"input": x_cl}, {"output": y_cl}, training=False)
            queue.finish()

        def cl_training():
            saved = device_layer.forward_cl({"input": x_cl}, {"output": y_cl}, training=True)
            device_layer.backward_cl(saved, {"output": gy_cl}, {}, {"input": gx_cl})
            queue.finish()

        calls["pyopencl (C API, cl_mem)"] = (cl_forward, cl_training)

    try:
        import torch
        import nyquist.torch as nt
    except ImportError:
        print("torch not installed: no nyquist.torch or PyTorch rows", file=sys.stderr)
        return calls
    torch.set_num_threads(int(os.environ.get("THREADS", "2")))
    xt = torch.from_numpy(x.copy())
    xt_grad = xt.clone().requires_grad_(True)
    gyt = torch.from_numpy(gy.copy())
    modules = {"nyquist.torch.BlurPool": nt.BlurPool(shape[1])}
    try:
        import antialiased_cnns

        modules["pytorch (antialiased_cnns.BlurPool)"] = antialiased_cnns.BlurPool(shape[1])
    except ImportError:
        print("antialiased_cnns not installed: no PyTorch row", file=sys.stderr)
    for name, module in modules.items():
        def forward(module=module):
            with torch.no_grad():
                module(xt)

        def training(module=module):
            xt_grad.grad = None
            module(xt_grad).backward(gyt)

        calls[name] = (forward, training)
    return calls


def measure(calls, repeats):
    """Round-robin timings: name -> (pass -> (median, q1, q3) ms)."""
    samples = {(name, index): [] for name in calls for index in (0, 1)}
    for (name, index) in samples:
        call = calls[name][index]
        start, count = time.perf_counter(), 0
        while count < 5 or time.perf_counter() - start < 0.2:
            call()
            count += 1
    for _ in range(repeats):
        for (name, index), bucket in samples.items():
            begin = time.perf_counter()
            calls[name][index]()
            bucket.append((time.perf_counter() - begin) * 1e3)
    return {key: quantiles(values) for key, values in samples.items()}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--bench", default=os.path.join(HERE, "..", ".build", "release", "nyquist-bench"))
    parser.add_argument("--shapes", default="1x64x56x56,8x64x112x112")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--output", default=os.path.join(HERE, "results", "python-overhead.md"))
    arguments = parser.parse_args()
    if arguments.repeats < 20:
        parser.error("--repeats must be at least 20")
    lines = ["| shape | path | forward ms (q1-q3) | forward+backward ms (q1-q3) |", "|---|---|---|---|"]
    for text in arguments.shapes.split(","):
        shape = tuple(int(size) for size in text.split("x"))
        print(f"{text}: swift", file=sys.stderr)
        swift = swift_rows(arguments.bench, shape, arguments.repeats)
        forward = swift["forward"]
        training = f"{swift['training'][0] + swift['backward'][0]:.3f} (training + backward rows)"
        lines.append(f"| {text} | swift (nyquist-bench --host) | {forward[0]:.3f} ({forward[1]:.3f}-{forward[2]:.3f}) "
                     f"| {training} |")
        print(f"{text}: python rows", file=sys.stderr)
        for (name, index), (median, q1, q3) in sorted(measure(python_calls(shape), arguments.repeats).items()):
            if index == 0:
                row = f"| {text} | {name} | {median:.3f} ({q1:.3f}-{q3:.3f}) |"
            else:
                lines.append(row + f" {median:.3f} ({q1:.3f}-{q3:.3f}) |")
    library = os.environ.get("NYQUIST_LIBRARY", "lib/libnyquist.so")
    text = "\n".join([f"# Per-call cost of Nyquist's Python paths (blur-pool k=4)", "",
                      f"Library: `{library}`; `python3 Benchmarks/python_overhead.py "
                      f"--shapes {arguments.shapes} --repeats {arguments.repeats}`.", ""] + lines) + "\n"
    with open(arguments.output, "w") as handle:
        handle.write(text)
    print(text)


if __name__ == "__main__":
    main()
