#!/bin/bash
# Kernel time (profiling events) before/after at the ResNet-50 stage shapes, batch 8, alternating
# the two binaries per operator.
out=${1:-/tmp/kernelbench/out}
mkdir -p "$out"
for op in max-pool avg-pool blur-pool max-blur-pool aps-pool tips-pool lift-down-pool lift-up-pool adaptive-blur-pool; do
  for side in before after; do
    bin=${BEFORE:-/work/before}/.build/release/nyquist-bench
    [ $side = after ] && bin=${AFTER:-/work/main}/.build/release/nyquist-bench
    $bin --shapes resnet --batch 8 --repeats 5 --reference-limit 0 --operators $op --json "$out/$side-$op.json" > "$out/$side-$op.txt" 2>> "$out/stderr.log" || echo "failed $side $op" >> "$out/stderr.log"
  done
done
echo done >> "$out/stderr.log"
