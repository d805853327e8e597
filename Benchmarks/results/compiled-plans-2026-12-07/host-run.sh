#!/bin/bash
# Before/after host-clock comparison: for each shape and operator, the before binary then the
# after binary, alternating, each writing its JSON rows.
set -u
out=${1:-/tmp/hostbench/out}
mkdir -p "$out"
ops="max-pool avg-pool blur-pool max-blur-pool aps-pool tips-pool lift-down-pool lift-up-pool adaptive-blur-pool"
for shape in 1x64x2x2 1x16x32x32 1x64x56x56 8x64x112x112; do
  for op in $ops; do
    for side in before after; do
      bin=${BEFORE:-/work/before}/.build/release/nyquist-bench
      [ $side = after ] && bin=${AFTER:-/work/main}/.build/release/nyquist-bench
      $bin --host --shapes $shape --operators $op --json "$out/$side-$op-$shape.json" > /dev/null 2>> "$out/stderr.log" || echo "failed: $side $op $shape" >> "$out/stderr.log"
    done
  done
done
echo done >> "$out/stderr.log"
