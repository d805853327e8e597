#!/bin/bash
# The repeat runs behind docs/performance.md's remarks on noise: host time of max-pool and
# max-blur-pool at 8x64x112x112, and kernel time of avg-pool at 8x1024x14x14 (20 repeats),
# three alternating runs of each binary.
set -u
out=${1:-extra}
mkdir -p "$out"
for i in 1 2 3; do
  for side in before after; do
    bin=${BEFORE:-/work/before}/.build/release/nyquist-bench
    [ $side = after ] && bin=${AFTER:-/work/main}/.build/release/nyquist-bench
    $bin --host --shapes 8x64x112x112 --operators max-pool,max-blur-pool --json "$out/host-$side-$i.json" > /dev/null 2>&1
    $bin --shapes 8x1024x14x14 --repeats 20 --reference-limit 0 --operators avg-pool --json "$out/kernel-$side-$i.json" > /dev/null 2>&1
  done
done
