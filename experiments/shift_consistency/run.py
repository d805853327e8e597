#!/usr/bin/env python3
"""Trains the small CNN with each downsampling and measures what the papers measure.

    python3 experiments/shift_consistency/run.py [--kinds blur,aps] [--seeds 0,1,2] [--epochs N]

Per model and seed: test accuracy; circular and standard (zero-filled) shift consistency for
shifts of 1 to 8 pixels (the probability that the predicted class of an image and of its copy
shifted by the shift, in one of the 8 directions chosen per image, agree, as Zhang 2019 and
the TIPS paper define consistency between two shifted copies); the maximum-sampling bias of
each downsampling layer on the test set (SPEC.md section 6: the fraction of its outputs equal,
to 1e-6 relative, to the maximum of their 2 x 2 input window); seconds per training epoch.
Results go to experiments/shift_consistency/results.json (one record per model and seed).

Training: SGD with momentum 0.9, learning rate 0.05 with a cosine schedule, weight decay 5e-4,
batch 64, random translations of up to 4 pixels (zero-filled) as augmentation; auxiliary losses
(LiftPool's regularisers, TIPS's L_FM and L_undo) join the cross-entropy with weight 0.1.
"""

import argparse
import json
import os
import sys
import time

import numpy as np
import torch
from torch import nn

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "python"))
sys.path.insert(0, HERE)

import data  # noqa: E402
import model  # noqa: E402

DIRECTIONS = [(1, 0), (-1, 0), (0, 1), (0, -1), (1, 1), (1, -1), (-1, 1), (-1, -1)]
AUXILIARY_WEIGHT = 0.1


def shift(images, dy, dx, circular):
    """`images` (N, C, H, W) moved down by dy and right by dx; wrapped or zero-filled."""
    moved = torch.roll(images, shifts=(dy, dx), dims=(2, 3))
    if circular:
        return moved
    height, width = images.shape[2:]
    rows = torch.arange(height) - dy
    columns = torch.arange(width) - dx
    keep = ((rows >= 0) & (rows < height))[:, None] & ((columns >= 0) & (columns < width))[None, :]
    return moved * keep.to(moved.dtype)


def predictions(net, images, batch=256):
    with torch.no_grad():
        return torch.cat([net(images[i:i + batch]).argmax(dim=1) for i in range(0, len(images), batch)])


def consistency(net, images, circular, rng):
    """Shift (1...8) -> agreement between the predictions of each image and of its shifted copy."""
    base = predictions(net, images)
    directions = rng.integers(0, len(DIRECTIONS), size=len(images))
    agreement = {}
    for distance in range(1, 9):
        agree = 0
        for index, (sy, sx) in enumerate(DIRECTIONS):
            chosen = np.nonzero(directions == index)[0]
            if len(chosen) == 0:
                continue
            moved = shift(images[chosen], sy * distance, sx * distance, circular)
            agree += int((predictions(net, moved) == base[chosen]).sum())
        agreement[distance] = agree / len(images)
    return agreement


def maximum_sampling_bias(net, images):
    """Per downsampling layer: the fraction of outputs equal (1e-6 relative) to the maximum of
    their 2 x 2 input window (SPEC.md section 6)."""
    found = []

    def hook(module, inputs, output):
        x = inputs[0]
        height, width = output.shape[2] * 2, output.shape[3] * 2
        padded = nn.functional.pad(x, (0, max(width - x.shape[3], 0), 0, max(height - x.shape[2], 0)),
                                   value=float("-inf"))
        window_max = nn.functional.max_pool2d(padded, 2)
        equal = (output - window_max).abs() <= 1e-6 * window_max.abs().clamp_min(1e-12)
        found.append(float(equal.float().mean()))

    handles = [pool.register_forward_hook(hook) for pool in net.downsamplings]
    try:
        with torch.no_grad():
            net(images[:512])
    finally:
        for handle in handles:
            handle.remove()
    return found


def train(kind, seed, train_set, test_set, epochs, batch=64, padding="zeros", log=print):
    torch.manual_seed(seed)
    np.random.seed(seed)  # TIPS draws its L_undo shifts from NumPy's generator
    rng = np.random.default_rng(seed)
    net = model.Net(kind, padding=padding)
    optimizer = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    images, labels = (torch.from_numpy(array) for array in train_set)
    steps = epochs * (len(images) // batch)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps)
    epoch_seconds = []
    for epoch in range(epochs):
        net.train()
        order = rng.permutation(len(images))
        start = time.perf_counter()
        losses = []
        for first in range(0, len(order) - batch + 1, batch):
            chosen = order[first:first + batch]
            x = shift(images[chosen], int(rng.integers(-4, 5)), int(rng.integers(-4, 5)), circular=False)
            loss = nn.functional.cross_entropy(net(x), labels[chosen])
            auxiliary = net.auxiliary_losses()
            objective = loss + AUXILIARY_WEIGHT * sum(auxiliary.values()) if auxiliary else loss
            optimizer.zero_grad()
            objective.backward()
            optimizer.step()
            scheduler.step()
            losses.append(float(loss.detach()))
        epoch_seconds.append(time.perf_counter() - start)
        log(f"  {kind} seed {seed} epoch {epoch + 1}/{epochs}: loss {np.mean(losses):.3f}, {epoch_seconds[-1]:.1f} s")
    net.eval()
    test_images, test_labels = (torch.from_numpy(array) for array in test_set)
    accuracy = float((predictions(net, test_images) == test_labels).float().mean())
    return {
        "kind": kind, "seed": seed, "epochs": epochs, "padding": padding, "accuracy": accuracy,
        "circular_consistency": consistency(net, test_images, True, np.random.default_rng(seed + 1000)),
        "standard_consistency": consistency(net, test_images, False, np.random.default_rng(seed + 1000)),
        "maximum_sampling_bias": maximum_sampling_bias(net, test_images),
        "seconds_per_epoch": float(np.median(epoch_seconds)),
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--kinds", default=",".join(model.KINDS))
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--train-size", type=int, default=6000)
    parser.add_argument("--test-size", type=int, default=2000)
    parser.add_argument("--padding", default="zeros", choices=("zeros", "circular"),
                        help="the convolutions' padding (circular: as the APS paper, for exact circular invariance)")
    parser.add_argument("--output", default=os.path.join(HERE, "results.json"))
    arguments = parser.parse_args()
    torch.set_num_threads(int(os.environ.get("THREADS", "2")))
    print(f"generating {arguments.train_size} + {arguments.test_size} images", flush=True)
    train_set = data.make_set(arguments.train_size, seed=1)
    test_set = data.make_set(arguments.test_size, seed=2)
    records = []
    for kind in arguments.kinds.split(","):
        for seed in (int(s) for s in arguments.seeds.split(",")):
            record = train(kind, seed, train_set, test_set, arguments.epochs, padding=arguments.padding,
                           log=lambda text: print(text, flush=True))
            records.append(record)
            print(json.dumps(record), flush=True)
            with open(arguments.output, "w") as handle:
                json.dump(records, handle, indent=1)


if __name__ == "__main__":
    main()
