"""Textured shapes: a procedurally generated 10-class image set rich in high frequencies.

Why generated: issue 21 asks for a real small image set only if a PyPI wheel carries it inside.
The one found (scikit-learn's digits) is 8 x 8 pixels, too small for a network with three
stride-2 stages and without the high frequencies that make aliasing matter; the others
(MNIST, CIFAR and their wrappers) download at run time, which this project may not do.

Each image is 32 x 32, one channel: a shape (disc, square, triangle, cross or ring) filled with
one of two textures (stripes or checks, periods of 2.5 to 4 pixels: near the Nyquist limit of
every stride-2 stage) over a textured background, placed, scaled and rotated at random with
sub-pixel precision and rendered by 4 x 4 supersampling. The class is (shape, texture): 10
classes. Everything is drawn from one seed, so a set is the same on every run.
"""

import numpy as np

SHAPES = ("disc", "square", "triangle", "cross", "ring")
TEXTURES = ("stripes", "checks")
CLASSES = len(SHAPES) * len(TEXTURES)
SIZE = 32
SUPERSAMPLE = 4


def _mask(shape, u, v):
    """Inside-mask of `shape` in its own coordinates (u, v), unit size."""
    if shape == "disc":
        return u * u + v * v <= 1.0
    if shape == "square":
        return (np.abs(u) <= 0.85) & (np.abs(v) <= 0.85)
    if shape == "triangle":
        return (v >= -0.7) & (v <= 1.0 - 1.7 * np.abs(u) / 1.2) & (np.abs(u) <= 1.0)
    if shape == "cross":
        return ((np.abs(u) <= 0.3) & (np.abs(v) <= 1.0)) | ((np.abs(v) <= 0.3) & (np.abs(u) <= 1.0))
    radius = u * u + v * v
    return (radius <= 1.0) & (radius >= 0.4)


def _texture(kind, x, y, period, angle, phase):
    along = x * np.cos(angle) + y * np.sin(angle)
    across = -x * np.sin(angle) + y * np.cos(angle)
    if kind == "stripes":
        return 0.5 + 0.5 * np.sin(2 * np.pi * along / period + phase)
    return 0.5 + 0.5 * np.sign(np.sin(2 * np.pi * along / period + phase) * np.sin(2 * np.pi * across / period))


def render(label, rng):
    """One image of class `label` (float32, 1 x 32 x 32, about zero mean and unit spread)."""
    shape, texture = SHAPES[label // len(TEXTURES)], TEXTURES[label % len(TEXTURES)]
    fine = SIZE * SUPERSAMPLE
    coordinates = (np.arange(fine) + 0.5) / SUPERSAMPLE  # pixel units
    y, x = np.meshgrid(coordinates, coordinates, indexing="ij")
    centre = rng.uniform(10.0, 22.0, size=2)
    scale = rng.uniform(6.0, 10.0)
    rotation = rng.uniform(0, 2 * np.pi)
    dx, dy = x - centre[1], y - centre[0]
    u = (dx * np.cos(rotation) + dy * np.sin(rotation)) / scale
    v = (-dx * np.sin(rotation) + dy * np.cos(rotation)) / scale
    inside = _mask(shape, u, v)
    foreground = _texture(texture, x, y, rng.uniform(2.5, 4.0), rng.uniform(0, np.pi), rng.uniform(0, 2 * np.pi))
    background = 0.5 + 0.25 * _texture("stripes", x, y, rng.uniform(5.0, 9.0), rng.uniform(0, np.pi),
                                       rng.uniform(0, 2 * np.pi))
    contrast = rng.uniform(0.6, 1.0)
    image = np.where(inside, contrast * foreground + (1 - contrast) * 0.5, background * rng.uniform(0.3, 0.7))
    image = image.reshape(SIZE, SUPERSAMPLE, SIZE, SUPERSAMPLE).mean(axis=(1, 3))
    image = image + rng.normal(0.0, 0.03, size=image.shape)
    return ((image - 0.45) / 0.25).astype(np.float32)[None]


def make_set(count, seed):
    """`count` images with labels cycling through the classes, from `seed`."""
    rng = np.random.default_rng(seed)
    labels = np.arange(count) % CLASSES
    rng.shuffle(labels)
    images = np.stack([render(int(label), rng) for label in labels])
    return images, labels.astype(np.int64)
