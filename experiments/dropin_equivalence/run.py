#!/usr/bin/env python3
"""nyquist.torch against the published PyTorch modules it replaces, on random inputs and loaded
weights: forward, input gradient and parameter gradients, float32.

Run by hand (torch and antialiased-cnns from PyPI; the official adaptive and TIPS modules are
read from files of their repositories, which this project does not ship):

    make python
    python3 experiments/dropin_equivalence/run.py \\
        --adaptive-module path/to/Adaptive-anti-Aliasing/models_lpf/layers/pasa.py \\
        --tips-module path/to/tips/tips.py

Each row gives the largest relative error (max |ours - published| / max |published|) over its
cases for the forward output and each gradient. The objective of a backward is sum(w * output)
with a random w, plus, for TIPS, 0.7 * MSE(psi_x, x_t) as the official training script adds.
Writes experiments/dropin_equivalence/results.md (or --output).
"""

import argparse
import os
import sys
import types

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "python"))
import nyquist.torch as nt  # noqa: E402


def load_module(path, name):
    """Executes a published module's file (the adaptive one imports cv2 without using it)."""
    sys.modules.setdefault("cv2", types.ModuleType("cv2"))
    module = types.ModuleType(name)
    with open(path) as handle:
        exec(compile(handle.read(), path, "exec"), module.__dict__)
    return module


def relative(actual, expected):
    return float((actual.detach() - expected.detach()).abs().max() / max(float(expected.detach().abs().max()), 1e-30))


class Row:
    def __init__(self, name):
        self.name, self.cases, self.errors = name, 0, {}

    def add(self, what, error):
        self.errors[what] = max(self.errors.get(what, 0.0), error)

    def text(self):
        errors = ", ".join(f"{what} {error:.1e}" for what, error in self.errors.items())
        return f"| {self.name} | {self.cases} | {errors} |"


def compare(row, published, ours, x, published_parameters, our_parameters, extra=None):
    """Forward and backward of both modules on x (a leaf requiring grad)."""
    expected, actual = published(x), ours(x)
    if isinstance(expected, tuple):
        for index, (e, a) in enumerate(zip(expected, actual)):
            row.add("forward" if index == 0 else f"result {index}", relative(a, e))
        weight = torch.randn_like(expected[0])
        objective_expected = (expected[0] * weight).sum() + (extra(*expected) if extra else 0)
        objective_actual = (actual[0] * weight).sum() + (extra(*actual) if extra else 0)
    else:
        row.add("forward", relative(actual, expected))
        weight = torch.randn_like(expected)
        objective_expected, objective_actual = (expected * weight).sum(), (actual * weight).sum()
    expected_gradients = torch.autograd.grad(objective_expected, [x] + published_parameters)
    actual_gradients = torch.autograd.grad(objective_actual, [x] + our_parameters)
    row.add("grad input", relative(actual_gradients[0], expected_gradients[0]))
    for name, a, e in zip(range(len(our_parameters)), actual_gradients[1:], expected_gradients[1:]):
        row.add(f"grad {our_parameter_names[id(our_parameters[name])]}", relative(a, e))
    row.cases += 1


our_parameter_names = {}


def named(module, names):
    parameters = [module.get_parameter(name) for name in names]
    for name, parameter in zip(names, parameters):
        our_parameter_names[id(parameter)] = name
    return parameters


def blur_rows(rows):
    import antialiased_cnns

    blur, max_blur = Row("BlurPool vs antialiased_cnns.BlurPool"), Row(
        "MaxBlurPool2d vs Sequential(MaxPool2d(2, 1), antialiased_cnns.BlurPool)")
    for filt_size in range(1, 8):
        for pad_type in ("reflect", "replicate", "zero"):
            for pad_off in (0, 1):
                for stride in (1, 2, 3):
                    for shape in ((2, 5, 13, 12), (1, 3, 8, 9)):
                        published = antialiased_cnns.BlurPool(shape[1], pad_type, filt_size, stride, pad_off)
                        ours = nt.BlurPool(shape[1], pad_type, filt_size, stride, pad_off)
                        ours.load_state_dict(published.state_dict())
                        x = torch.randn(*shape, requires_grad=True)
                        compare(blur, published, ours, x, [], [])
                        published = torch.nn.Sequential(torch.nn.MaxPool2d(2, 1), published)
                        ours = nt.MaxBlurPool2d(shape[1], pad_type, filt_size, stride, pad_off)
                        compare(max_blur, published, ours, x, [], [])
    rows += [blur, max_blur]


def adaptive_rows(rows, path):
    official = load_module(path, "pasa")
    row_train, row_eval = (Row("AdaptiveBlurPool2d vs Downsample_PASA_group_softmax, train mode"),
                           Row("AdaptiveBlurPool2d vs Downsample_PASA_group_softmax, eval mode"))
    names = ["conv.weight", "bn.weight", "bn.bias"]
    for kernel_size in (3, 5, 7):
        for stride in (1, 2):
            for group, channels in ((1, 4), (2, 8), (8, 16)):
                for pad_type in ("reflect", "replicate", "zero"):
                    published = official.Downsample_PASA_group_softmax(channels, kernel_size, stride, pad_type, group)
                    # A checkpoint that is not the initialisation: trained-like BatchNorm.
                    with torch.no_grad():
                        published.bn.weight.uniform_(0.5, 1.5)
                        published.bn.bias.uniform_(-0.3, 0.3)
                        published.bn.running_mean.uniform_(-0.5, 0.5)
                        published.bn.running_var.uniform_(0.5, 2.0)
                    ours = nt.AdaptiveBlurPool2d(channels, kernel_size, stride, pad_type, group)
                    ours.load_state_dict(published.state_dict())
                    x = torch.randn(2, channels, 11, 10, requires_grad=True)
                    for row, training in ((row_eval, False), (row_train, True)):
                        published.train(training)
                        ours.train(training)
                        compare(row, published, ours, x, [published.get_parameter(n) for n in names],
                                named(ours, names))
                    row_train.add("running_mean", relative(ours.bn.running_mean, published.bn.running_mean))
                    row_train.add("running_var", relative(ours.bn.running_var, published.bn.running_var))
    rows += [row_train, row_eval]


def tips_rows(rows, path):
    official = load_module(path, "tips")
    row = Row("TIPS vs the official TIPS (results: psi_x, x_t; + 0.7 MSE(psi_x, x_t))")
    names = ["conv1.weight", "conv2.weight"]
    initial = 0
    for kernel in (3, 5):
        for transform_type in ("standard", "circular"):
            for shape in ((2, 4, 8, 10), (2, 3, 9, 11), (1, 5, 7, 8), (3, 2, 16, 15)):
                torch.manual_seed(kernel * 100 + len(transform_type))
                published = official.TIPS(shape[1], kernel=kernel, transform_type=transform_type)
                torch.manual_seed(kernel * 100 + len(transform_type))
                ours = nt.TIPS(shape[1], kernel=kernel, transform_type=transform_type)
                initial = max(initial, max(relative(a, b) for a, b in zip(ours.state_dict().values(),
                                                                            published.state_dict().values())))
                with torch.no_grad():
                    published.conv2.weight.mul_(10.0)  # a trained-like, non-uniform tau
                ours.load_state_dict(published.state_dict())
                x = torch.randn(*shape, requires_grad=True)
                seed = int(np.random.randint(1 << 30))

                def seeded(module):
                    def call(inputs):
                        np.random.seed(seed)
                        return module(inputs)
                    return call

                compare(row, seeded(published), seeded(ours), x, [published.get_parameter(n) for n in names],
                        named(ours, names), extra=lambda output, psi, x_t: 0.7 * torch.nn.functional.mse_loss(psi, x_t))
    row.add("initial weights (same torch seed)", initial)
    rows.append(row)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--adaptive-module", help="pasa.py of MaureenZOU/Adaptive-anti-Aliasing")
    parser.add_argument("--tips-module", help="tips.py of sourajitcs/tips")
    parser.add_argument("--output", default=os.path.join(HERE, "results.md"))
    arguments = parser.parse_args()
    torch.manual_seed(0)
    np.random.seed(0)
    rows = []
    blur_rows(rows)
    if arguments.adaptive_module:
        adaptive_rows(rows, arguments.adaptive_module)
    if arguments.tips_module:
        tips_rows(rows, arguments.tips_module)
    lines = ["# nyquist.torch against the published modules", "",
             f"torch {torch.__version__}, float32, {torch.get_num_threads()} threads; "
             "`python3 experiments/dropin_equivalence/run.py --adaptive-module ... --tips-module ...`.", "",
             "Largest relative error over the cases (max |nyquist.torch - published| / max |published|).", "",
             "| comparison | cases | largest relative error |", "|---|---|---|"] + [row.text() for row in rows]
    text = "\n".join(lines) + "\n"
    with open(arguments.output, "w") as handle:
        handle.write(text)
    print(text)


if __name__ == "__main__":
    main()
