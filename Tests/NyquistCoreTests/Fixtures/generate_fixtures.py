#!/usr/bin/env python3
"""Regenerates the NPY and safetensors fixtures of NyquistCoreTests.

Run from anywhere: `python3 Tests/NyquistCoreTests/Fixtures/generate_fixtures.py`.
Needs numpy for the .npy files; the safetensors file is written with struct + json only,
so that the fixture does not depend on torch or the safetensors package.

The tests restate the value formulas below independently; keep the two in step.
"""
import json
import os
import struct

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))


def path(name):
    return os.path.join(HERE, name)


def main():
    # Accepted files.
    # float32, rank 4: value = 0.5 * i - 3 for flat (C-order) index i.
    a = (0.5 * np.arange(2 * 3 * 4 * 5) - 3).astype("<f4").reshape(2, 3, 4, 5)
    np.save(path("f32_2x3x4x5.npy"), a)
    # float64, rank 2: value = 0.1 * i - 1 (computed in float64, then rounded to float32 on load).
    b = (0.1 * np.arange(12, dtype=np.float64) - 1).astype("<f8").reshape(3, 4)
    np.save(path("f64_3x4.npy"), b)
    # float32, rank 1: value = i * i.
    c = (np.arange(7) ** 2).astype("<f4")
    np.save(path("f32_vector7.npy"), c)
    # Format version 2.0 (4-byte header length), float32 2x2: value = i + 1.
    d = (np.arange(4) + 1).astype("<f4").reshape(2, 2)
    with open(path("f32_v2_2x2.npy"), "wb") as f:
        np.lib.format.write_array(f, d, version=(2, 0))

    # Rejected files.
    np.save(path("i32_2x3.npy"), np.arange(6, dtype="<i4").reshape(2, 3))
    np.save(path("f32_bigendian_2x3.npy"), np.arange(6, dtype=">f4").reshape(2, 3))
    np.save(path("f32_fortran_3x4.npy"), np.asfortranarray(np.arange(12, dtype="<f4").reshape(3, 4)))
    np.save(path("f32_scalar.npy"), np.array(1.5, dtype="<f4"))

    # safetensors: "bias" F64 [3] value 0.1 * i, "scale" F32 [] value 2, "weight" F32 [2, 3]
    # value i - 2.5, plus __metadata__. Data is packed in that (sorted) order.
    tensors = [
        ("bias", "F64", [3], struct.pack("<3d", *[0.1 * i for i in range(3)])),
        ("scale", "F32", [], struct.pack("<f", 2.0)),
        ("weight", "F32", [2, 3], struct.pack("<6f", *[i - 2.5 for i in range(6)])),
    ]
    header = {"__metadata__": {"format": "pt", "source": "nyquist fixture"}}
    data = b""
    for name, dtype, shape, raw in tensors:
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [len(data), len(data) + len(raw)]}
        data += raw
    text = json.dumps(header, separators=(",", ":")).encode("utf-8")
    text += b" " * ((8 - len(text) % 8) % 8)
    with open(path("params.safetensors"), "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text + data)


if __name__ == "__main__":
    main()
