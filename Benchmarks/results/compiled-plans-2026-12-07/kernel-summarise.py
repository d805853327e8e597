#!/usr/bin/env python3
"""Reads the before/after JSON files of one or more runs of run.sh (folders given as arguments)
and prints, per operator, pass and shape, the median kernel ms over the runs for each side."""
import json, glob, os, sys

folders = sys.argv[1:] or ["."]
rows = {}
for folder in folders:
    for path in sorted(glob.glob(os.path.join(folder, "*.json"))):
        side, op = os.path.basename(path)[:-5].split("-", 1)
        with open(path) as f:
            data = json.load(f)
        for row in data["rows"]:
            rows.setdefault((row["op"], row["pass"], row["shape_name"]), {}).setdefault(side, []).append(row["ms"])

def median(values):
    values = sorted(values)
    return values[len(values) // 2]

print(f"| op | pass | shape (N = 8) | before kernel ms | after kernel ms | after / before |")
print("|---|---|---|---|---|---|")
for (op, p, shape), entry in rows.items():
    if "before" in entry and "after" in entry:
        b, a = median(entry["before"]), median(entry["after"])
        spread = lambda v: f"{min(v):.2f}-{max(v):.2f}"
        print(f"| {op} | {p} | {shape.replace('resnet ', '')} | {b:.3f} ({spread(entry['before'])}) | "
              f"{a:.3f} ({spread(entry['after'])}) | {a / b:.2f} |")
