#!/usr/bin/env python3
"""Reads the before/after JSON files of run.sh and prints a Markdown table of host ms per call."""
import json, glob, os, sys

folder = sys.argv[1] if len(sys.argv) > 1 else "."
rows = {}
floors = {}
for path in glob.glob(os.path.join(folder, "*.json")):
    side = os.path.basename(path).split("-", 1)[0]
    with open(path) as f:
        data = json.load(f)
    for row in data["rows"]:
        key = (row["shape_name"], row["op"], row["pass"])
        if row["op"] == "launch-floor":
            floors.setdefault((row["shape_name"], side), []).append(row["host_ms"])
            continue
        rows.setdefault(key, {})[side] = row

shapes = ["1x64x2x2", "1x16x32x32", "1x64x56x56", "8x64x112x112"]
ops = ["max-pool", "avg-pool", "blur-pool", "max-blur-pool", "aps-pool", "tips-pool", "lift-down-pool",
       "lift-up-pool", "adaptive-blur-pool"]
passes = ["forward", "training", "backward"]
print("| shape | op | pass | before ms | after ms | before / after | launches before -> after | after / floor |")
print("|---|---|---|---|---|---|---|---|")
for shape in shapes:
    after_floor = sorted(floors.get((shape, "after"), [float("nan")]))
    floor = after_floor[len(after_floor) // 2]
    for op in ops:
        for p in passes:
            entry = rows.get((shape, op, p))
            if not entry or "before" not in entry or "after" not in entry:
                continue
            b, a = entry["before"], entry["after"]
            print(f"| {shape} | {op} | {p} | {b['host_ms']:.3f} | {a['host_ms']:.3f} | "
                  f"{b['host_ms'] / a['host_ms']:.1f}x | {b['launches']} -> {a['launches']} | {a['host_ms'] / floor:.1f} |")
for shape in shapes:
    for side in ["before", "after"]:
        values = sorted(floors.get((shape, side), []))
        if values:
            print(f"\nlaunch floor {shape} {side}: median of {len(values)} runs {values[len(values) // 2]:.3f} ms", end="")
print()
