#!/usr/bin/env python3
"""Host-clock A/B of two nyquist-bench builds in one run (run by hand; installs nothing).

    python3 Benchmarks/compare_builds.py --before OLD/nyquist-bench --after .build/release/nyquist-bench \
        --operators blur-pool --shapes 1x64x56x56,8x64x112x112 --rounds 3 --output Benchmarks/results/X.md

Each round runs `nyquist-bench --host` (warm-up, then the median of --repeats calls, call to
completion, host clock) of the before build, then of the after build, alternating; the table
gives, per operator, pass and shape, the median over the rounds of each build's median, and
before / after (above 1: the after build is faster).
"""

import argparse
import json
import statistics
import subprocess
import tempfile


def run(binary, operators, shapes, repeats):
    with tempfile.NamedTemporaryFile(suffix=".json") as output:
        subprocess.run([binary, "--host", "--operators", operators, "--shapes", shapes, "--repeats", str(repeats),
                        "--reference-limit", "0", "--json", output.name], check=True, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)
        rows = json.load(open(output.name))["rows"]
    shape = lambda row: "x".join(map(str, row["shape"])) if isinstance(row["shape"], list) else row["shape"]
    return {(row["op"], row["pass"], shape(row)): row["host_ms"] for row in rows if row["op"] != "launch-floor"}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--before", required=True)
    parser.add_argument("--after", required=True)
    parser.add_argument("--operators", required=True)
    parser.add_argument("--shapes", required=True)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--output", required=True)
    arguments = parser.parse_args()
    if arguments.repeats < 20:
        parser.error("--repeats must be at least 20")
    samples = {"before": {}, "after": {}}
    for _ in range(arguments.rounds):
        for side in ("before", "after"):
            binary = getattr(arguments, side)
            for key, value in run(binary, arguments.operators, arguments.shapes, arguments.repeats).items():
                samples[side].setdefault(key, []).append(value)
    lines = ["# Host-clock A/B of two builds", "", "Command:", "",
             "    python3 Benchmarks/compare_builds.py --before " + arguments.before + " --after " + arguments.after
             + f" --operators {arguments.operators} --shapes {arguments.shapes} --rounds {arguments.rounds}"
             + f" --repeats {arguments.repeats} --output {arguments.output}", "",
             "Per row: the median over the rounds of each build's host-clock median (ms).", "",
             "| op | pass | shape | before ms | after ms | before / after | rounds |", "|---|---|---|---|---|---|---|"]
    for key in sorted(samples["before"]):
        if key not in samples["after"]:
            continue
        before, after = statistics.median(samples["before"][key]), statistics.median(samples["after"][key])
        lines.append(f"| {key[0]} | {key[1]} | {key[2]} | {before:.3f} | {after:.3f} | {before / after:.2f}x | "
                     f"{len(samples['before'][key])} |")
    with open(arguments.output, "w") as handle:
        handle.write("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
