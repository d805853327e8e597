"""nyquist.run on NumPy arrays against the library's CPU reference (nyquist.reference)."""

import numpy as np
import pytest

import nyquist

SHAPE = (2, 3, 9, 10)


def relative_error(actual, expected):
    """max |actual - expected| / max(max |expected|, 1), as the C example and the demo measure it."""
    return float(np.max(np.abs(actual - expected)) / max(float(np.max(np.abs(expected))), 1.0))


def random(shape, seed):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


# Operator, options, tolerance: each family's parity tolerance (docs/parity.md).
CASES = [
    ("max-pool", {"kernel": 3, "stride": 2, "pad": 1}, 1e-5),
    ("avg-pool", {}, 1e-5),
    ("blur-pool", {"filter_size": 5}, 1e-5),
    ("max-blur-pool", {}, 1e-5),
    ("aps-pool", {"norm": "l1"}, 1e-5),
    ("tips-pool", {"lambda_fm": 0.5, "lambda_undo": 0.25, "seed": 3}, 1e-4),
    ("lift-down-pool", {"kernel": 3}, 1e-4),
    ("adaptive-blur-pool", {"softmax": "per-group"}, 1e-3),
]


@pytest.mark.parametrize("op,options,tolerance", CASES, ids=[case[0] for case in CASES])
def test_forward_and_backward_match_the_reference(op, options, tolerance):
    x = random(SHAPE, 1)
    inference = nyquist.run(op, x, **options)
    expected = nyquist.reference(op, x, **options)
    assert inference["output"].shape == expected["output"].shape
    assert relative_error(inference["output"], expected["output"]) <= tolerance
    grad_output = random(inference["output"].shape, 2)
    training = nyquist.run(op, x, grad_output=grad_output, **options)
    expected = nyquist.reference(op, x, grad_output=grad_output, **options)
    assert training["grad_input"].shape == x.shape
    assert relative_error(training["grad_input"], expected["grad_input"]) <= tolerance


def test_results_by_name():
    x = random(SHAPE, 3)
    tips = nyquist.run("tips-pool", x, train=True)
    assert tips["extra"]["psi"].shape == (2, 3, 10, 10)
    assert np.allclose(tips["extra"]["tau"].sum(axis=2), 1, atol=1e-5)
    assert set(tips["extra"]["losses"]) == {"fm", "undo"}
    aps = nyquist.run("aps-pool", x)
    assert set(np.unique(aps["extra"]["indices"])) <= {0, 1, 2, 3}
    lift = nyquist.run("lift-down-pool", x, grad_output=random((2, 3, 5, 5), 4))
    assert set(lift["extra"]["regularisers"]) == {"c_u", "c_p", "loss"}
    assert len(lift["grad_params"]) == 8
    adaptive = nyquist.run("adaptive-blur-pool", x, grad_output=random((2, 3, 5, 5), 5))
    assert set(adaptive["grad_params"]) == {"conv.weight", "bn.weight", "bn.bias"}
    assert adaptive["extra"]["filters"].shape == (2, 9, 5, 5)


@pytest.mark.parametrize("shape", [(2, 3, 7, 10), (2, 3, 9)], ids=["2-D", "1-D"])
def test_lift_up_pool_reconstructs_the_input_from_the_bands(shape):
    x = random(shape, 6)
    bands = nyquist.run("lift-down-pool", x)["extra"]
    names = ["ll", "lh", "hl", "hh"] if len(shape) == 4 else ["s", "d"]
    size = {"height": shape[2], "width": shape[3]} if len(shape) == 4 else {"width": shape[2]}
    back = nyquist.run("lift-up-pool", bands[names[0]], inputs={n: bands[n] for n in names[1:]}, **size)
    assert relative_error(back["output"], x) <= 1e-5


def test_mistakes_are_errors_with_messages():
    x = random(SHAPE, 7)
    with pytest.raises(nyquist.NyquistError) as unknown:
        nyquist.run("median-pool", x)
    assert unknown.value.status == 1 and "median-pool" in str(unknown.value)
    with pytest.raises(nyquist.NyquistError) as refused:
        nyquist.run("blur-pool", x, padding="mirror")
    assert "mirror" in str(refused.value)
    with pytest.raises(nyquist.NyquistError) as missing:
        nyquist.run("lift-up-pool", random((2, 3, 4, 5), 8))
    assert "lh" in str(missing.value)


def test_version():
    assert nyquist.version().count(".") == 2


def test_the_documentation_examples_run():
    """Every ```python block of docs/python.md runs as written (those that import torch or
    pyopencl where these are installed; the count of blocks run is checked so that none is
    skipped by accident)."""
    import importlib.util
    import os
    import re
    page = os.path.join(os.path.dirname(__file__), "..", "..", "docs", "python.md")
    with open(page) as file:
        blocks = re.findall(r"```python\n(.*?)```", file.read(), re.DOTALL)
    assert len(blocks) >= 3, "docs/python.md lost its examples"
    optional = ("torch", "pyopencl")
    ran = 0
    for block in blocks:
        needs = [name for name in optional if re.search(rf"^import .*\b{name}\b", block, re.MULTILINE)]
        if any(importlib.util.find_spec(name) is None for name in needs):
            continue
        exec(compile(block, page, "exec"), {})
        ran += 1
    assert ran >= 1


def test_pyopencl_arrays_stay_on_the_device():
    cl = pytest.importorskip("pyopencl")
    cl_array = pytest.importorskip("pyopencl.array")
    context = cl.create_some_context(interactive=False)
    queue = cl.CommandQueue(context)
    x = random(SHAPE, 6)
    grad_output = random((2, 3, 5, 5), 7)
    on_host = nyquist.run("lift-down-pool", x, grad_output=grad_output, kernel=3)
    on_device = nyquist.run("lift-down-pool", cl_array.to_device(queue, x),
                            grad_output=cl_array.to_device(queue, grad_output), kernel=3)
    assert isinstance(on_device["output"], cl_array.Array) and on_device["output"].queue is queue
    assert np.array_equal(on_device["output"].get(), on_host["output"])
    assert np.array_equal(on_device["extra"]["hh"].get(), on_host["extra"]["hh"])
    assert np.array_equal(on_device["grad_input"].get(), on_host["grad_input"])
    assert np.array_equal(on_device["grad_params"]["update.0.weight"].get(), on_host["grad_params"]["update.0.weight"])
    # An array at an offset inside a larger buffer.
    padded = cl_array.to_device(queue, np.concatenate([np.zeros(32, np.float32), x.ravel()]))
    view = padded[32:].reshape(SHAPE)
    assert np.array_equal(nyquist.run("blur-pool", view)["output"].get(), nyquist.run("blur-pool", x)["output"])


def test_lift_up_pool_gradients_match_finite_differences():
    """lift-up-pool takes four bands, which nyquist.reference cannot feed: its input and band
    gradients are checked by central differences along a random direction (float32; the step
    balances rounding against the curvature of tanh and ReLU kinks, as in test_torch)."""
    bands = {name: random((1, 2, 4, 5), 20 + index) for index, name in enumerate(("ll", "lh", "hl", "hh"))}
    grad_output = random((1, 2, 8, 10), 30)
    details = {name: bands[name] for name in ("lh", "hl", "hh")}
    result = nyquist.run("lift-up-pool", bands["ll"], inputs=details, grad_output=grad_output, kernel=3)
    gradients = {"ll": result["grad_input"], **result["grad_extra"]}
    assert set(gradients) == {"ll", "lh", "hl", "hh"}
    rng = np.random.default_rng(31)
    directions = {name: rng.standard_normal(value.shape).astype(np.float32) for name, value in bands.items()}
    step = 2e-3

    def objective(sign):
        moved = {name: value + sign * step * directions[name] for name, value in bands.items()}
        output = nyquist.run("lift-up-pool", moved["ll"], inputs={n: moved[n] for n in ("lh", "hl", "hh")},
                             kernel=3)["output"]
        return float(np.sum(output.astype(np.float64) * grad_output))

    estimate = (objective(1) - objective(-1)) / (2 * step)
    analytic = sum(float(np.sum(gradients[name].astype(np.float64) * directions[name])) for name in bands)
    assert abs(estimate - analytic) <= 2e-3 * max(abs(estimate), 1.0)
