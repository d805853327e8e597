#!/usr/bin/env python3
"""Independent oracle for Nyquist's CPU reference of BlurPool2D and MaxBlurPool2D.

Written from SPEC.md section 2 with numpy only (no code shared with the Swift reference):

    xpad = pad(x, top = left = floor((k-1)/2) + padOffset,
                  bottom = right = ceil((k-1)/2) + padOffset, mode)
    y[n,c,i,j] = sum_{u,v<k} h[u] h[v] xpad[n,c, s*i+u, s*j+v]

numpy's pad modes match ours: 'constant' = zero, 'reflect' = reflect (mirror without repeating
the edge), 'edge' = replicate, 'wrap' = circular. MaxBlurPool is the 2x2 stride-1 unpadded max
followed by the same blur.

Run from anywhere: `python3 generate_fixtures.py`; it rewrites blur_pool_fixtures.json next to
itself. Inputs are seeded, and JSON keeps every float64 exactly (repr round-trips), so the file
is reproducible byte for byte.
"""
import json
import math
import os

import numpy as np

NUMPY_MODE = {"zero": "constant", "reflect": "reflect", "replicate": "edge", "circular": "wrap"}


def binomial_taps(k):
    row = np.array([math.comb(k - 1, i) for i in range(k)], dtype=np.float64)
    return row / row.sum()


def blur_pool(x, k, s, mode, pad_offset):
    h = binomial_taps(k)
    f = np.outer(h, h)
    before = (k - 1) // 2 + pad_offset
    after = k // 2 + pad_offset
    xpad = np.pad(x, ((0, 0), (0, 0), (before, after), (before, after)), mode=NUMPY_MODE[mode])
    ph, pw = xpad.shape[2], xpad.shape[3]
    ho = (ph - k) // s + 1
    wo = (pw - k) // s + 1
    y = np.zeros(x.shape[:2] + (ho, wo))
    for u in range(k):
        for v in range(k):
            y += f[u, v] * xpad[:, :, u:u + s * (ho - 1) + 1:s, v:v + s * (wo - 1) + 1:s]
    return y


def max_blur_pool(x, k, s, mode, pad_offset):
    m = np.maximum(np.maximum(x[:, :, :-1, :-1], x[:, :, :-1, 1:]), np.maximum(x[:, :, 1:, :-1], x[:, :, 1:, 1:]))
    return blur_pool(m, k, s, mode, pad_offset)


# (operator, N, C, H, W, filter size, stride, padding mode, pad offset)
CASES = [
    ("blur-pool", 1, 1, 5, 7, 3, 2, "reflect", 0),
    ("blur-pool", 2, 3, 8, 8, 4, 2, "reflect", 0),
    ("blur-pool", 1, 1, 8, 9, 7, 2, "reflect", 0),
    ("blur-pool", 1, 2, 9, 6, 5, 3, "replicate", 1),
    ("blur-pool", 2, 2, 11, 13, 4, 2, "replicate", 0),
    ("blur-pool", 2, 1, 7, 10, 2, 2, "circular", 1),
    ("blur-pool", 1, 1, 4, 4, 6, 2, "circular", 2),
    ("blur-pool", 1, 2, 6, 5, 7, 1, "zero", 0),
    ("blur-pool", 1, 3, 12, 9, 1, 2, "zero", 1),
    ("blur-pool", 1, 1, 10, 10, 3, 3, "reflect", 1),
    ("max-blur-pool", 2, 2, 9, 8, 4, 2, "reflect", 0),
    ("max-blur-pool", 1, 3, 6, 7, 3, 1, "circular", 1),
    ("max-blur-pool", 1, 1, 7, 7, 5, 2, "zero", 0),
]


def main():
    rng = np.random.default_rng(20190411)
    cases = []
    for op, n, c, h, w, k, s, mode, offset in CASES:
        x = rng.uniform(-1.0, 1.0, size=(n, c, h, w))
        y = (blur_pool if op == "blur-pool" else max_blur_pool)(x, k, s, mode, offset)
        cases.append({
            "operator": op,
            "inputShape": [n, c, h, w],
            "filterSize": k,
            "stride": s,
            "padding": mode,
            "padOffset": offset,
            "input": x.ravel().tolist(),
            "outputShape": list(y.shape),
            "output": y.ravel().tolist(),
        })
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "blur_pool_fixtures.json")
    with open(path, "w") as f:
        json.dump({"generator": "generate_fixtures.py (numpy %s)" % np.__version__, "cases": cases}, f, indent=1)
        f.write("\n")
    print("wrote %d cases to %s" % (len(cases), path))


if __name__ == "__main__":
    main()
