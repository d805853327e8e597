#!/usr/bin/env python3
"""Prints the three runs per side of extra-run.sh: host ms (max-pool, max-blur-pool at
8x64x112x112) and kernel ms (avg-pool at 8x1024x14x14)."""
import json, glob, os, sys
folder = sys.argv[1] if len(sys.argv) > 1 else "extra"
for kind, field in (("host", "host_ms"), ("kernel", "ms")):
    values = {}
    for path in sorted(glob.glob(os.path.join(folder, f"{kind}-*.json"))):
        side = os.path.basename(path).split("-")[1]
        for row in json.load(open(path))["rows"]:
            if row["op"] == "launch-floor":
                continue
            values.setdefault((row["op"], row["pass"], row["shape_name"]), {}).setdefault(side, []).append(row[field])
    print(f"\n{kind} ms, three runs per side:\n| op | pass | shape | before | after |\n|---|---|---|---|---|")
    for (op, p, shape), sides in values.items():
        fmt = lambda v: ", ".join(f"{x:.2f}" for x in v)
        print(f"| {op} | {p} | {shape} | {fmt(sides.get('before', []))} | {fmt(sides.get('after', []))} |")
