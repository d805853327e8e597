// Fixed-order lane reductions shared by aps.cl and tips.cl (the per-sample and per-plane sums
// of the polyphase operators, SPEC.md section 5). Spliced in by the host where a kernel file says
// #include "reduce_lanes.h"; it uses GROUP_SIZE, which the including file defines first.
#ifndef NYQUIST_REDUCE_LANES_H
#define NYQUIST_REDUCE_LANES_H

// Every per-plane and per-sample sum is split over `lanes` virtual lanes, a power of two that
// depends only on how much there is to sum (never on GROUP_SIZE or the other launch knobs):
// lane l adds work units l, l + lanes, l + 2 lanes, ... in that order, and the lanes are then
// joined by a fixed tree (lane j takes lane j + span, span = lanes / 2 ... 1). A work-group of
// any size only decides which item computes which lane, so every tuning candidate gives the
// same bits. Small maps get few lanes, so their tree stays short.
#define REDUCE_LANES 256

// The lanes of a sum over `work` units: the power of two at or above it, at most REDUCE_LANES.
inline int reduce_lanes(int work) {
    int lanes = 1;
    while (lanes < work && lanes < REDUCE_LANES) lanes <<= 1;
    return lanes;
}

// Joins partial[t * REDUCE_LANES + lane], lane < lanes, for each of `slots` values t in the
// fixed tree, leaving slot t's total in partial[t * REDUCE_LANES] for every item to read.
// Every item of the work-group must call it (`lanes` is the same for all of them).
inline void sum_lanes(__local float *partial, int slots, int lanes, int item) {
    barrier(CLK_LOCAL_MEM_FENCE);
    for (int span = lanes / 2; span > 0; span >>= 1) {
        for (int lane = item; lane < span; lane += GROUP_SIZE) {
            for (int t = 0; t < slots; ++t) partial[t * REDUCE_LANES + lane] += partial[t * REDUCE_LANES + lane + span];
        }
        barrier(CLK_LOCAL_MEM_FENCE);
    }
}

#endif
