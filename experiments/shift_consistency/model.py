"""The small CNN of the experiment, with each downsampling of issue 21 in turn.

Four stages of conv3x3-BN-ReLU (widths 32, 64, 96, 128: about 0.3 M parameters) with a
stride-2 downsampling between stages (32 -> 16 -> 8 -> 4), global average pooling and a linear
classifier. The downsamplings (`KINDS`):

- strided: the next stage's first conv has stride 2 (the aliasing baseline);
- max, avg: torch's MaxPool2d(2) / AvgPool2d(2) (PyTorch's, as a network would use them);
- blur: BlurPool(filt_size=4) after the ReLU, MaxBlurPool: max over 2 x 2 (stride 1), then
  BlurPool, as Zhang 2019 places them;
- adaptive-joint, adaptive-pergroup: AdaptiveBlurPool2d (k=3, 8 groups), the official
  module's joint softmax and the paper's per-group one;
- lift: LiftDownPool2d (its regulariser loss joins the objective);
- aps: APSPool2d (the architecture has no shortcuts, so no index reuse is needed);
- tips: TIPS (L_FM and L_undo join the objective, as the TIPS paper trains it).
Every one except strided, max and avg runs on Nyquist's OpenCL kernels through nyquist.torch.
"""

import torch
from torch import nn

import nyquist.torch as nt

KINDS = ("strided", "max", "avg", "blur", "maxblur", "adaptive-joint", "adaptive-pergroup", "lift", "aps", "tips")
WIDTHS = (32, 64, 96, 128)


def conv_block(inputs, outputs, stride=1, padding="zeros"):
    return nn.Sequential(
        nn.Conv2d(inputs, outputs, 3, stride=stride, padding=1, bias=False, padding_mode=padding),
        nn.BatchNorm2d(outputs), nn.ReLU(inplace=False))


class Downsample(nn.Module):
    """One stride-2 downsampling of `kind` on `channels` channels; `aux` holds the auxiliary
    losses of the last forward with gradients (LiftPool's regularisers; TIPS's L_FM, L_undo)."""

    def __init__(self, kind, channels):
        super().__init__()
        self.kind = kind
        self.aux = []
        if kind == "max":
            self.pool = nn.MaxPool2d(2)
        elif kind == "avg":
            self.pool = nn.AvgPool2d(2)
        elif kind == "blur":
            self.pool = nt.BlurPool(channels, filt_size=4)
        elif kind == "maxblur":
            self.pool = nt.MaxBlurPool2d(channels, filt_size=4)
        elif kind.startswith("adaptive"):
            softmax = "joint" if kind == "adaptive-joint" else "per-group"
            self.pool = nt.AdaptiveBlurPool2d(channels, 3, stride=2, group=8, softmax=softmax)
        elif kind == "lift":
            self.pool = nt.LiftDownPool2d(channels, kernel_size=5)
        elif kind == "aps":
            self.pool = nt.APSPool2d(channels, return_poly_indices=False)
        elif kind == "tips":
            self.pool = nt.TIPS(channels, return_soft_polyphase_indices=True)
        else:
            raise ValueError(f"no pooling layer for {kind!r}")

    def forward(self, x):
        self.aux = []
        if self.kind == "tips":
            output, psi, target, tau = self.pool(x)
            if torch.is_grad_enabled():
                undo = nn.functional.mse_loss(psi, target)
                fm = (1 - tau.norm(dim=2)).mean()
                self.aux = [("undo", undo), ("fm", fm)]
            return output
        output = self.pool(x)
        if self.kind == "lift" and self.pool.loss is not None:
            self.aux = [("lift", self.pool.loss)]
        return output


class Net(nn.Module):
    """The CNN with downsampling `kind`; `downsamplings` are the three pooling modules (empty
    for strided). `padding` is the convolutions' ('zeros', or 'circular' as the APS paper uses
    for its exact circular-shift invariance)."""

    def __init__(self, kind, classes=10, in_channels=1, padding="zeros"):
        super().__init__()
        self.kind = kind
        layers = [conv_block(in_channels, WIDTHS[0], padding=padding)]
        self.downsamplings = nn.ModuleList()
        for before, after in zip(WIDTHS, WIDTHS[1:]):
            if kind == "strided":
                layers.append(conv_block(before, after, stride=2, padding=padding))
            else:
                pool = Downsample(kind, before)
                self.downsamplings.append(pool)
                layers += [pool, conv_block(before, after, padding=padding)]
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(WIDTHS[-1], classes)

    def forward(self, x):
        return self.classifier(self.features(x).mean(dim=(2, 3)))

    def auxiliary_losses(self):
        """The auxiliary losses of the last forward, by name, summed over the layers."""
        totals = {}
        for pool in self.downsamplings:
            for name, value in pool.aux:
                totals[name] = totals.get(name, 0) + value
        return totals
