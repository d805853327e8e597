"""nyquist.torch modules against plain PyTorch forms written here from SPEC.md (and against
antialiased_cnns.BlurPool when it is installed): forward, input and parameter gradients,
BatchNorm's running statistics, parameters updated in place, and finite differences for
LiftPool. Skipped without torch (CI installs none; run them by hand with torch from PyPI)."""

import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")
F = torch.nn.functional

import nyquist.torch as nt  # noqa: E402

# Each family's parity tolerance (docs/parity.md), relative to max |expected|.
WINDOW, TIPS_TOLERANCE, LIFT, ADAPTIVE = 1e-5, 1e-4, 1e-4, 1e-3


def relative_error(actual, expected):
    return float((actual.detach() - expected.detach()).abs().max() / max(float(expected.detach().abs().max()), 1e-12))


def gradients(output, inputs, weight):
    return torch.autograd.grad((output * weight).sum(), inputs)


# Plain PyTorch forms of SPEC.md ------------------------------------------------------------

def binomial(k):
    row = torch.tensor([math.comb(k - 1, i) for i in range(k)], dtype=torch.float32)
    return row[:, None] * row[None, :] / row.sum() ** 2


def pad(x, sides, mode):
    return F.pad(x, sides, mode="constant" if mode == "zero" else mode)


def blur_pool(x, k, stride=2, mode="reflect", offset=0):
    first, last = (k - 1) // 2 + offset, math.ceil((k - 1) / 2) + offset
    padded = pad(x, (first, last, first, last), mode) if first or last else x
    channels = x.shape[1]
    return F.conv2d(padded, binomial(k)[None, None].repeat(channels, 1, 1, 1), stride=stride, groups=channels)


def adaptive_blur_pool(x, conv_weight, bn, k, stride, groups, softmax, mode="reflect"):
    n, c, h, w = x.shape
    padded = pad(x, (k // 2,) * 4, mode)
    z = F.batch_norm(F.conv2d(padded, conv_weight), bn["running_mean"], bn["running_var"], bn["weight"], bn["bias"],
                     training=bn["training"], momentum=0.1, eps=1e-5)
    if softmax == "joint":
        weights = z.softmax(dim=1).view(n, groups, k * k, h, w)
    else:
        weights = z.view(n, groups, k * k, h, w).softmax(dim=2)
    weights = weights.repeat_interleave(c // groups, dim=1)
    patches = F.unfold(padded, k).view(n, c, k * k, h, w)
    return (patches * weights).sum(2)[:, :, ::stride, ::stride]


def tips_pool(x, conv1, conv2):
    n, c, h, w = x.shape
    xp = F.pad(x, (w % 2, 0, h % 2, 0), mode="reflect") if h % 2 or w % 2 else x
    k = conv1.shape[-1]
    psi = F.relu(F.conv2d(xp, conv1, padding=(k - 1) // 2, groups=c))
    hh, ww = xp.shape[-2] // 2, xp.shape[-1] // 2
    quadrants = torch.stack([psi[:, :, a * hh:(a + 1) * hh, b * ww:(b + 1) * ww].mean((2, 3))
                             for a, b in ((0, 0), (0, 1), (1, 0), (1, 1))], dim=2)
    tau = (quadrants * conv2.view(1, c, 1)).softmax(dim=2)
    phases = torch.stack([xp[:, :, a::2, b::2] for a, b in ((0, 0), (1, 0), (0, 1), (1, 1))], dim=2)
    return (phases * tau[..., None, None]).sum(2), psi, tau


def aps_pool(x):
    phases = torch.stack([x[:, :, a::2, b::2] for a, b in ((0, 0), (1, 0), (0, 1), (1, 1))], dim=1)
    choice = phases.flatten(2).norm(dim=2).argmax(dim=1)
    return phases[torch.arange(x.shape[0]), choice], choice


# Tests --------------------------------------------------------------------------------------

@pytest.mark.parametrize("k,mode,offset", [(1, "reflect", 0), (3, "zero", 1), (4, "reflect", 0), (5, "replicate", 0),
                                           (7, "reflect", 1)])
def test_blur_pool_and_max_blur_pool_match_the_spec(k, mode, offset):
    torch.manual_seed(0)
    x = torch.randn(2, 3, 11, 12, requires_grad=True)
    for module, expected in ((nt.BlurPool(3, pad_type=mode, filt_size=k, pad_off=offset),
                              blur_pool(x, k, 2, mode, offset)),
                             (nt.MaxBlurPool2d(3, pad_type=mode, filt_size=k, pad_off=offset),
                              blur_pool(F.max_pool2d(x, 2, 1), k, 2, mode, offset))):
        y = module(x)
        assert y.shape == expected.shape
        assert relative_error(y, expected) <= WINDOW
        weight = torch.randn_like(expected)
        assert relative_error(gradients(y, [x], weight)[0], gradients(expected, [x], weight)[0]) <= WINDOW


def test_blur_pool_replaces_antialiased_cnns():
    antialiased_cnns = pytest.importorskip("antialiased_cnns")
    torch.manual_seed(1)
    x = torch.randn(2, 4, 9, 10, requires_grad=True)
    for k in (2, 3, 4, 5):
        published = antialiased_cnns.BlurPool(4, filt_size=k)
        ours = nt.BlurPool(4, filt_size=k)
        ours.load_state_dict(published.state_dict())
        assert relative_error(ours(x), published(x)) <= WINDOW
        weight = torch.randn_like(published(x))
        assert relative_error(gradients(ours(x), [x], weight)[0], gradients(published(x), [x], weight)[0]) <= WINDOW


@pytest.mark.parametrize("softmax,stride,k", [("joint", 2, 3), ("per-group", 1, 5)])
def test_adaptive_blur_pool_trains_and_evaluates_as_the_spec(softmax, stride, k):
    torch.manual_seed(2)
    module = nt.AdaptiveBlurPool2d(4, k, stride=stride, group=2, softmax=softmax)
    assert set(module.state_dict()) == {"conv.weight", "bn.weight", "bn.bias", "bn.running_mean", "bn.running_var",
                                        "bn.num_batches_tracked"}
    with torch.no_grad():
        module.bn.weight.uniform_(0.5, 1.5)
        module.bn.bias.uniform_(-0.2, 0.2)
    running_mean, running_var = module.bn.running_mean.clone(), module.bn.running_var.clone()
    x = torch.randn(2, 4, 9, 8, requires_grad=True)
    parameters = [x, module.conv.weight, module.bn.weight, module.bn.bias]
    for training in (True, False):
        module.train(training)
        bn = {"running_mean": running_mean, "running_var": running_var, "weight": module.bn.weight,
              "bias": module.bn.bias, "training": training}
        expected = adaptive_blur_pool(x, module.conv.weight, bn, k, stride, 2, softmax)
        y = module(x)
        assert relative_error(y, expected) <= ADAPTIVE
        # F.batch_norm updated running_mean/var in train mode, as the module must have.
        assert relative_error(module.bn.running_mean, running_mean) <= ADAPTIVE
        assert relative_error(module.bn.running_var, running_var) <= ADAPTIVE
        weight = torch.randn_like(expected)
        for actual, wanted in zip(gradients(y, parameters, weight), gradients(expected, parameters, weight)):
            assert relative_error(actual, wanted) <= ADAPTIVE
    assert int(module.bn.num_batches_tracked) == 1


def test_parameters_changed_in_place_are_used():
    torch.manual_seed(3)
    module = nt.TIPS(3)
    x = torch.randn(2, 3, 8, 8)
    module(x)
    optimizer = torch.optim.SGD(module.parameters(), lr=0.5)
    (module(x)[0] ** 2).sum().backward()
    optimizer.step()
    with torch.no_grad():
        module.conv2.weight.mul_(3.0)
    expected = tips_pool(x, module.conv1.weight, module.conv2.weight)[0]
    assert relative_error(module(x)[0], expected) <= TIPS_TOLERANCE


@pytest.mark.parametrize("shape", [(2, 3, 8, 10), (2, 3, 9, 11)])
def test_tips_matches_the_spec_with_gradients_through_psi_and_tau(shape):
    torch.manual_seed(4)
    module = nt.TIPS(shape[1], return_soft_polyphase_indices=True, detach_target=True)
    with torch.no_grad():
        module.conv2.weight.mul_(20.0)  # tau far from uniform
    x = torch.randn(*shape, requires_grad=True)
    output, psi, x_t, tau = module(x)
    expected_output, expected_psi, expected_tau = tips_pool(x, module.conv1.weight, module.conv2.weight)
    for actual, expected in ((output, expected_output), (psi, expected_psi), (tau, expected_tau)):
        assert relative_error(actual, expected) <= TIPS_TOLERANCE
    assert x_t.shape == psi.shape and not x_t.requires_grad

    def objective(y, p, t):
        return (y * weight).sum() + 0.7 * F.mse_loss(p, x_t) + (1 - t.norm(dim=2)).mean()

    weight = torch.randn_like(output)
    parameters = [x, module.conv1.weight, module.conv2.weight]
    actual = torch.autograd.grad(objective(output, psi, tau), parameters)
    expected = torch.autograd.grad(objective(expected_output, expected_psi, expected_tau), parameters)
    for a, e in zip(actual, expected):
        assert relative_error(a, e) <= TIPS_TOLERANCE


def test_aps_matches_the_spec_and_reuses_given_indices():
    torch.manual_seed(5)
    x = torch.randn(3, 4, 8, 10, requires_grad=True)
    module = nt.APSPool2d(4)
    output, indices = module(x)
    expected, choice = aps_pool(x)
    assert torch.equal(indices, choice)
    assert relative_error(output, expected) <= WINDOW
    weight = torch.randn_like(expected)
    assert relative_error(gradients(output, [x], weight)[0], gradients(expected, [x], weight)[0]) <= WINDOW
    shortcut = torch.randn(3, 4, 8, 10)
    given, same = module(shortcut, indices)
    assert torch.equal(same, indices)
    phases = [shortcut[i, :, a::2, b::2] for i, (a, b) in
              enumerate([((0, 0), (1, 0), (0, 1), (1, 1))[int(k)] for k in indices])]
    assert relative_error(given, torch.stack(phases)) <= WINDOW


def test_lift_down_and_up_round_trip_with_finite_difference_gradients():
    torch.manual_seed(6)
    down = nt.LiftDownPool2d(3, kernel_size=3, return_bands=True)
    up = nt.LiftUpPool2d(down)
    assert set(down.state_dict()) == {f"{b}.{i}.{k}" for b in ("predict", "update") for i in (0, 2)
                                      for k in ("weight", "bias")}
    assert not list(up.parameters())
    x = torch.randn(2, 3, 8, 10, requires_grad=True)
    output, bands = down(x)
    assert relative_error(up(*bands, size=(8, 10)), x) <= LIFT
    weight = torch.randn_like(output)
    # predict.2's weight: the first layers' weights move ReLU kinks across a finite-difference
    # step (their gradients are checked device against reference in RegistryParityTests).
    weight_predict = down.predict[2].weight

    def objective(xx):
        y, b = down(xx)
        return (y * weight).sum() + 2.0 * down.loss + 0.5 * b[1].sum()

    gradient_x, gradient_w = torch.autograd.grad(objective(x), [x, weight_predict])
    # Central differences in float32 along random directions: the step is large enough for
    # float32's rounding (objective ~ 10, so ~1e-6 absolute per evaluation) and small enough
    # for the curvature of tanh and the ReLU kinks; checked to agree to ~1e-4 at 1e-3 and 3e-3.
    step = 2e-3
    direction = torch.randn_like(x)
    values = [float(objective((x.detach() + sign * step * direction).requires_grad_(True))) for sign in (1, -1)]
    estimate = (values[0] - values[1]) / (2 * step)
    assert abs(estimate - float((gradient_x * direction).sum())) <= 2e-3 * max(abs(estimate), 1.0)
    direction = torch.randn_like(weight_predict)
    original = weight_predict.detach().clone()
    values = []
    for sign in (1, -1):
        with torch.no_grad():
            weight_predict.copy_(original + sign * step * direction)
        values.append(float(objective(x.detach().requires_grad_(True))))
    with torch.no_grad():
        weight_predict.copy_(original)
    estimate = (values[0] - values[1]) / (2 * step)
    assert abs(estimate - float((gradient_w * direction).sum())) <= 2e-3 * max(abs(estimate), 1.0)


def test_lift_1d_and_misuse():
    torch.manual_seed(7)
    down = nt.LiftDownPool1d(2, kernel_size=5, return_bands=True)
    x = torch.randn(2, 2, 9)
    output, bands = down(x)
    assert output.shape == (2, 2, 5) and down.loss.requires_grad  # the parameters want gradients
    with torch.no_grad():
        down(x)
    assert down.loss is None  # inference: no regularisers
    assert relative_error(nt.LiftUpPool1d(down)(*bands, size=9), x) <= LIFT
    with pytest.raises(ValueError):
        down(torch.randn(2, 2, 8, 8))
    with pytest.raises(ValueError):
        nt.BlurPool(3)(torch.randn(1, 4, 8, 8))
    with pytest.raises(ValueError):
        nt.TIPS(3, stride=3)


def test_inputs_read_in_place_are_guarded():
    torch.manual_seed(8)
    pool = nt.BlurPool(2)
    x = torch.randn(1, 2, 9, 8, requires_grad=True)
    hidden = x * 2.0
    y = pool(hidden)
    hidden.add_(1.0)  # the saved state reads this memory in the backward
    with pytest.raises(RuntimeError):
        y.sum().backward()
    # A non-contiguous input (copied first) gives the same as its contiguous copy.
    wide = torch.randn(1, 2, 8, 18)
    strided = wide[:, :, :, ::2]
    with torch.no_grad():
        assert torch.equal(pool(strided), pool(strided.contiguous()))
