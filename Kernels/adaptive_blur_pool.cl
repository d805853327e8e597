// AdaptiveBlurPool inference (SPEC.md section 3): at every output position (i, j) of sample n,
// one work item evaluates the predictor conv at input position (s*i, s*j) only, applies the
// BatchNorm folded into a per-channel scale and shift, the softmax, and filters every channel
// with its group's predicted k x k filter. Nothing of size k*k x input (or G*k*k x H x W) is
// ever written: the logits live in registers, one group (k*k values) at a time.
//
// Joint softmax needs the maximum and the sum over all G*k*k logits before any filter is
// known, so it runs two passes over the groups: the first accumulates an online (running
// maximum, rescaled sum) pair, the second recomputes each group's logits and filters with
// exp(z - max) / sum. This trades a second predictor evaluation for O(k*k) private memory
// whatever G is. Per-group softmax needs one pass.
//
// Padding: the host's axis tables (Sources/Nyquist/Plans/AxisTables.swift) give, for tap u of
// output row i, the input row row_source[i * K + u] (-1: reads zero); the same for columns.
//
// Defines:
//   K              kernel size k (3, 5, 7)
//   CHANNELS       input channels C
//   GROUPS         filter groups G (divides C; groups are contiguous channel blocks)
//   JOINT          1: one softmax over all G*k*k logits; 0: one per group
//   WRITE_FILTERS  1: also write the filters (N x G*k*k x H' x W')
//   STRIDE         subsampling stride s (training kernels, which read the full-resolution map)
//   REDUCE         work-group size of the reduction kernels (a power of two)
//   FAN_OUT_ROWS / FAN_OUT_COLS    width of the inverted strided tables (backward gather)
//   FAN_FULL_ROWS / FAN_FULL_COLS  width of the inverted stride-1 tables (backward gather)
//
// Training (SPEC.md: BatchNorm statistics over all N x H x W positions) materialises the raw
// predictor map a (N x G*k*k x H x W, which SPEC allows) and, in backward, its gradient, the
// filters and the logit gradients at output positions (N x G*k*k x H' x W'). Reductions (batch
// statistics, BatchNorm parameter gradients) run one work-group of REDUCE items per reduced
// value: each item sums a fixed strided subset, then a fixed tree; the conv weight gradient is
// one item per (c, o, n) summing in a fixed order, then the per-sample partials in order of n
// (adaptive_weight_gradient_rows, _sum); no atomics, so results are deterministic.
// The input gradient is a gather over inverted tables that list, for each input row (column),
// the (output row, tap) pairs that read it, so reflected and wrapped reads need no atomics.
//
// Work-item mapping: global (output columns, output rows, batch); one output position each.
// Accumulation order is fixed (channel, then tap), so results are deterministic.
#include "common.h"

#ifndef K
#define K 3
#endif
#ifndef CHANNELS
#define CHANNELS 8
#endif
#ifndef GROUPS
#define GROUPS 8
#endif
#ifndef JOINT
#define JOINT 1
#endif
#ifndef WRITE_FILTERS
#define WRITE_FILTERS 0
#endif

#ifndef STRIDE
#define STRIDE 2
#endif
#ifndef REDUCE
#define REDUCE 64
#endif
#ifndef FAN_OUT_ROWS
#define FAN_OUT_ROWS 1
#endif
#ifndef FAN_OUT_COLS
#define FAN_OUT_COLS 1
#endif
#ifndef FAN_FULL_ROWS
#define FAN_FULL_ROWS 1
#endif
#ifndef FAN_FULL_COLS
#define FAN_FULL_COLS 1
#endif
#define EPSILON 1e-5f

#define KK (K * K)
#define P (GROUPS * KK)
#define CPG (CHANNELS / GROUPS)

// conv(xpad) of group g's k*k predictor channels at one position. `offsets[q]` is the in-plane
// offset tap q reads (-1: zero padding).
inline void group_conv(
    __global const float *xn, __global const float *weight, const int *offsets, int plane, int g, float *logits) {
    for (int t = 0; t < KK; ++t) logits[t] = 0.0f;
    for (int c = 0; c < CHANNELS; ++c) {
        __global const float *xc = xn + c * plane;
        __global const float *wc = weight + (g * KK * CHANNELS + c) * KK;
        for (int q = 0; q < KK; ++q) {
            float value = load_or_zero(xc, offsets[q]);
            for (int t = 0; t < KK; ++t) logits[t] += wc[t * CHANNELS * KK + q] * value;
        }
    }
}

// BN(conv(xpad)) of group g with BatchNorm folded into scale and shift.
inline void group_logits(
    __global const float *xn, __global const float *weight, __global const float *scale,
    __global const float *shift, const int *offsets, int plane, int g, float *logits) {
    group_conv(xn, weight, offsets, plane, g, logits);
    for (int t = 0; t < KK; ++t) logits[t] = logits[t] * scale[g * KK + t] + shift[g * KK + t];
}

// Fills offsets[u * K + v] for output (i, j) from the axis tables.
inline void window_offsets(
    __global const int *row_source, __global const int *col_source, int i, int j, int width, int *offsets) {
    for (int u = 0; u < K; ++u) {
        int row = row_source[i * K + u];
        for (int v = 0; v < K; ++v) {
            int col = col_source[j * K + v];
            offsets[u * K + v] = (row >= 0 && col >= 0) ? row * width + col : -1;
        }
    }
}

// BN(a) of group g read from the full-resolution map at (row, col).
inline void group_logits_from_map(
    __global const float *map, __global const float *scale, __global const float *shift, int n, int g, int plane,
    int offset, float *logits) {
    for (int t = 0; t < KK; ++t) {
        int o = g * KK + t;
        logits[t] = map[(n * P + o) * plane + offset] * scale[o] + shift[o];
    }
}

// Fixed-order tree sum of scratch[0..REDUCE) into scratch[0]; every item must call it.
inline void tree_sum(__local float *scratch, int lid) {
    for (int span = REDUCE / 2; span > 0; span /= 2) {
        barrier(CLK_LOCAL_MEM_FENCE);
        if (lid < span) scratch[lid] += scratch[lid + span];
    }
    barrier(CLK_LOCAL_MEM_FENCE);
}

// Adds z to an online softmax accumulator (running maximum, sum of exp(z - maximum)).
inline void online_softmax(float z, float *maximum, float *total) {
    if (z > *maximum) {
        *total = *total * exp(*maximum - z) + 1.0f;
        *maximum = z;
    } else {
        *total += exp(z - *maximum);
    }
}

// The epilogue of the one-position forward kernels at output `position` of sample n: group g's
// softmax (over every group's logits when JOINT, whose `maximum` and `total` the caller's
// first pass found; over the group's own otherwise), the filters written when asked, and the
// group's channels filtered with them.
inline void softmax_and_filter(
    float *logits, float maximum, float total, __global const float *xn, const int *offsets, int plane, int n,
    int g, int position, int out_plane, __global float *y, __global float *filters) {
#if !JOINT
    maximum = -INFINITY;
    total = 0.0f;
    for (int t = 0; t < KK; ++t) online_softmax(logits[t], &maximum, &total);
#endif
    float inverse = 1.0f / total;
    for (int t = 0; t < KK; ++t) logits[t] = exp(logits[t] - maximum) * inverse;
#if WRITE_FILTERS
    for (int t = 0; t < KK; ++t) filters[(n * P + g * KK + t) * out_plane + position] = logits[t];
#endif
    for (int c = g * CPG; c < (g + 1) * CPG; ++c) {
        __global const float *xc = xn + c * plane;
        float sum = 0.0f;
        for (int q = 0; q < KK; ++q) sum += logits[q] * load_or_zero(xc, offsets[q]);
        y[(n * CHANNELS + c) * out_plane + position] = sum;
    }
}

__kernel void adaptive_forward(
    __global const float *x, __global const float *weight, __global const float *scale,
    __global const float *shift, __global const int *row_source, __global const int *col_source,
    __global float *y, __global float *filters,
    int batch, int height, int width, int out_height, int out_width) {
    int j = get_global_id(0);
    int i = get_global_id(1);
    int n = get_global_id(2);
    if (j >= out_width || i >= out_height || n >= batch) return;
    int plane = height * width;
    int out_plane = out_height * out_width;
    int offsets[KK];
    window_offsets(row_source, col_source, i, j, width, offsets);
    __global const float *xn = x + n * CHANNELS * plane;
    float logits[KK];
    float maximum = -INFINITY;
    float total = 0.0f;
#if JOINT
    for (int g = 0; g < GROUPS; ++g) {
        group_logits(xn, weight, scale, shift, offsets, plane, g, logits);
        for (int t = 0; t < KK; ++t) online_softmax(logits[t], &maximum, &total);
    }
#endif
    for (int g = 0; g < GROUPS; ++g) {
        group_logits(xn, weight, scale, shift, offsets, plane, g, logits);
        softmax_and_filter(logits, maximum, total, xn, offsets, plane, n, g, i * out_width + j, out_plane, y, filters);
    }
}

// ---- Tiled predictor (TILED = 1): the predictor conv as a small matrix product ----
//
// Per work item POSITIONS output positions (rows i0 ... i0 + POSITIONS - 1 of one column j, so
// neighbouring items read neighbouring columns) times all P predictor channels. The weights are
// repacked by the host to wt[(c * KK + q) * PP + o] (PP = P rounded up to a multiple of 8, zero
// filled), so a block of 8 output channels is one vector load. The loop over c * KK inputs
// keeps OUT_VECTORS x POSITIONS float8 accumulators in registers: each vector weight load
// serves POSITIONS multiply-adds and each input value OUT_VECTORS * 8 of them, as in a GEMM
// micro-kernel (CLBlast's Xgemm, MIOpen's direct convolutions). The logits of the tile stay in
// private memory (POSITIONS * PP floats, which the host bounds), so joint softmax needs no
// second predictor evaluation.
//
// Defines: POSITIONS (1...4), OUT_VECTORS (float8 blocks per register tile, 1...4).
#ifndef POSITIONS
#define POSITIONS 4
#endif
#ifndef OUT_VECTORS
#define OUT_VECTORS 2
#endif
#define PP (((P) + 7) / 8 * 8)
#define OUT_TILE (OUT_VECTORS * 8)
#define OUT_TILES ((PP + OUT_TILE - 1) / OUT_TILE)

// Raw conv (no BatchNorm) of all P channels at the tile's positions into logits[r * PP + o].
// The accumulators are named variables, not an array: PoCL keeps loop-indexed private arrays
// on the stack, which turned every multiply-add into a load and a store. Tiles past PP clamp
// their weight reads to the last block and drop the results.
#define TILE_STEP(r)                                                   \
    {                                                                  \
        const float value = load_or_zero(xc, offsets[(r) * KK + q]);   \
        a##r##0 += w0 * value;                                         \
        TILE_MORE(a##r##1 += w1 * value;, a##r##2 += w2 * value;, a##r##3 += w3 * value;) \
    }
#if OUT_VECTORS == 1
#define TILE_MORE(b1, b2, b3)
#elif OUT_VECTORS == 2
#define TILE_MORE(b1, b2, b3) b1
#elif OUT_VECTORS == 3
#define TILE_MORE(b1, b2, b3) b1 b2
#else
#define TILE_MORE(b1, b2, b3) b1 b2 b3
#endif
#define TILE_DECLARE(r) float8 a##r##0 = 0.0f, a##r##1 = 0.0f, a##r##2 = 0.0f, a##r##3 = 0.0f;
#define TILE_STORE(r)                                                                        \
    if ((r) < POSITIONS) {                                                                    \
        vstore8(a##r##0, 0, logits + (r) * PP + o0);                                          \
        if (OUT_VECTORS > 1 && o0 + 8 < PP) vstore8(a##r##1, 0, logits + (r) * PP + o0 + 8);   \
        if (OUT_VECTORS > 2 && o0 + 16 < PP) vstore8(a##r##2, 0, logits + (r) * PP + o0 + 16); \
        if (OUT_VECTORS > 3 && o0 + 24 < PP) vstore8(a##r##3, 0, logits + (r) * PP + o0 + 24); \
    }

inline void tiled_conv(__global const float *xn, __global const float *wt, const int *offsets, int plane,
                       float *logits) {
    for (int tile = 0; tile < OUT_TILES; ++tile) {
        const int o0 = tile * OUT_TILE;
        TILE_DECLARE(0)
        TILE_DECLARE(1)
        TILE_DECLARE(2)
        TILE_DECLARE(3)
        for (int c = 0; c < CHANNELS; ++c) {
            __global const float *xc = xn + c * plane;
            __global const float *weights = wt + c * KK * PP;
            for (int q = 0; q < KK; ++q) {
                __global const float *row = weights + q * PP;
                const float8 w0 = vload8(0, row + o0);
                const float8 w1 = OUT_VECTORS > 1 ? vload8(0, row + min(o0 + 8, PP - 8)) : w0;
                const float8 w2 = OUT_VECTORS > 2 ? vload8(0, row + min(o0 + 16, PP - 8)) : w0;
                const float8 w3 = OUT_VECTORS > 3 ? vload8(0, row + min(o0 + 24, PP - 8)) : w0;
                TILE_STEP(0)
#if POSITIONS > 1
                TILE_STEP(1)
#endif
#if POSITIONS > 2
                TILE_STEP(2)
#endif
#if POSITIONS > 3
                TILE_STEP(3)
#endif
            }
        }
        TILE_STORE(0)
        TILE_STORE(1)
        TILE_STORE(2)
        TILE_STORE(3)
    }
}

// Inference with the tiled predictor. Global (W', ceil(H' / POSITIONS), N).
__kernel void adaptive_forward_tiled(
    __global const float *x, __global const float *wt, __global const float *scale,
    __global const float *shift, __global const int *row_source, __global const int *col_source,
    __global float *y, __global float *filters,
    int batch, int height, int width, int out_height, int out_width) {
    const int j = get_global_id(0);
    const int i0 = get_global_id(1) * POSITIONS;
    const int n = get_global_id(2);
    if (j >= out_width || i0 >= out_height || n >= batch) return;
    const int plane = height * width;
    const int out_plane = out_height * out_width;
    int offsets[POSITIONS * KK];
    for (int r = 0; r < POSITIONS; ++r) {
        // Positions past the last row repeat it (computed, never written).
        const int i = min(i0 + r, out_height - 1);
        for (int u = 0; u < K; ++u) {
            const int row = row_source[i * K + u];
            for (int v = 0; v < K; ++v) {
                const int col = col_source[j * K + v];
                offsets[r * KK + u * K + v] = (row >= 0 && col >= 0) ? row * width + col : -1;
            }
        }
    }
    __global const float *xn = x + n * CHANNELS * plane;
    float logits[POSITIONS * PP];
    tiled_conv(xn, wt, offsets, plane, logits);
    for (int r = 0; r < POSITIONS && i0 + r < out_height; ++r) {
        const int position = (i0 + r) * out_width + j;
        float *z = logits + r * PP;
        for (int o = 0; o < P; ++o) z[o] = z[o] * scale[o] + shift[o];
        float maximum = -INFINITY;
        float total = 0.0f;
#if JOINT
        for (int o = 0; o < P; ++o) online_softmax(z[o], &maximum, &total);
#endif
        for (int g = 0; g < GROUPS; ++g) {
            float *f = z + g * KK;
#if !JOINT
            maximum = -INFINITY;
            total = 0.0f;
            for (int t = 0; t < KK; ++t) online_softmax(f[t], &maximum, &total);
#endif
            const float inverse = 1.0f / total;
            for (int t = 0; t < KK; ++t) f[t] = exp(f[t] - maximum) * inverse;
#if WRITE_FILTERS
            for (int t = 0; t < KK; ++t) filters[(n * P + g * KK + t) * out_plane + position] = f[t];
#endif
            for (int c = g * CPG; c < (g + 1) * CPG; ++c) {
                __global const float *xc = xn + c * plane;
                float sum = 0.0f;
                for (int q = 0; q < KK; ++q) sum += f[q] * load_or_zero(xc, offsets[r * KK + q]);
                y[(n * CHANNELS + c) * out_plane + position] = sum;
            }
        }
    }
}

// Training: the raw predictor map at every input position with the tiled conv (stride-1
// tables). Global (W, ceil(H / POSITIONS), N).
__kernel void adaptive_predictor_full_tiled(
    __global const float *x, __global const float *wt, __global const int *row_source,
    __global const int *col_source, __global float *map, int batch, int height, int width) {
    const int j = get_global_id(0);
    const int i0 = get_global_id(1) * POSITIONS;
    const int n = get_global_id(2);
    if (j >= width || i0 >= height || n >= batch) return;
    const int plane = height * width;
    int offsets[POSITIONS * KK];
    for (int r = 0; r < POSITIONS; ++r) {
        const int i = min(i0 + r, height - 1);
        for (int u = 0; u < K; ++u) {
            const int row = row_source[i * K + u];
            for (int v = 0; v < K; ++v) {
                const int col = col_source[j * K + v];
                offsets[r * KK + u * K + v] = (row >= 0 && col >= 0) ? row * width + col : -1;
            }
        }
    }
    float logits[POSITIONS * PP];
    tiled_conv(x + n * CHANNELS * plane, wt, offsets, plane, logits);
    for (int r = 0; r < POSITIONS && i0 + r < height; ++r) {
        for (int o = 0; o < P; ++o) map[(n * P + o) * plane + (i0 + r) * width + j] = logits[r * PP + o];
    }
}

// ---- Training forward ----

// Raw predictor a = conv(xpad) at every input position. Global (W, H, N); stride-1 tables.
__kernel void adaptive_predictor_full(
    __global const float *x, __global const float *weight, __global const int *row_source,
    __global const int *col_source, __global float *map, int batch, int height, int width) {
    int j = get_global_id(0);
    int i = get_global_id(1);
    int n = get_global_id(2);
    if (j >= width || i >= height || n >= batch) return;
    int plane = height * width;
    int offsets[KK];
    window_offsets(row_source, col_source, i, j, width, offsets);
    __global const float *xn = x + n * CHANNELS * plane;
    float logits[KK];
    for (int g = 0; g < GROUPS; ++g) {
        group_conv(xn, weight, offsets, plane, g, logits);
        for (int t = 0; t < KK; ++t) map[(n * P + g * KK + t) * plane + i * width + j] = logits[t];
    }
}

// The running statistics after a batch, and their folded scale and shift, each float operation
// rounded on its own (no contraction into fused multiply-adds): the host folds parameters it
// loads with the same operations (AdaptiveBlurPool2D.folded), so that a layer saved after
// training and loaded again gives the same bits.
inline void running_statistics(int o, float mean, float variance, __global const float *gamma,
                               __global const float *beta, __global float *running_mean, __global float *running_var,
                               __global float *running_scale, __global float *running_shift, float momentum,
                               float unbiased) {
#pragma OPENCL FP_CONTRACT OFF
    float kept = 1.0f - momentum;
    float updated_mean = kept * running_mean[o] + momentum * mean;
    float updated_var = kept * running_var[o] + momentum * (variance * unbiased);
    float scale = gamma[o] / sqrt(updated_var + EPSILON);
    running_mean[o] = updated_mean;
    running_var[o] = updated_var;
    running_scale[o] = scale;
    running_shift[o] = beta[o] - updated_mean * scale;
}

// Batch mean and biased variance of each predictor channel over N x H x W (two passes), and
// the folded BatchNorm scale = gamma / sqrt(var + eps), shift = beta - mean * scale. Then the
// running statistics, in place on the device (PyTorch's train mode: momentum, the unbiased
// batch variance), and their folded scale and shift, which inference reads: the host never
// waits for the statistics.
// One work-group of REDUCE items per channel: global (P * REDUCE), local (REDUCE).
__kernel void adaptive_batch_statistics(
    __global const float *map, __global const float *gamma, __global const float *beta, __global float *mean_out,
    __global float *var_out, __global float *scale_out, __global float *shift_out, int batch, int plane,
    __local float *scratch, __global float *running_mean, __global float *running_var, __global float *running_scale,
    __global float *running_shift, float momentum, float unbiased) {
    int o = get_group_id(0);
    int lid = get_local_id(0);
    int count = batch * plane;
    float sum = 0.0f;
    for (int index = lid; index < count; index += REDUCE) {
        int n = index / plane;
        sum += map[(n * P + o) * plane + index - n * plane];
    }
    scratch[lid] = sum;
    tree_sum(scratch, lid);
    float mean = scratch[0] / (float)count;
    barrier(CLK_LOCAL_MEM_FENCE);
    float squares = 0.0f;
    for (int index = lid; index < count; index += REDUCE) {
        int n = index / plane;
        float d = map[(n * P + o) * plane + index - n * plane] - mean;
        squares += d * d;
    }
    scratch[lid] = squares;
    tree_sum(scratch, lid);
    if (lid == 0) {
        float variance = scratch[0] / (float)count;
        float scale = gamma[o] / sqrt(variance + EPSILON);
        mean_out[o] = mean;
        var_out[o] = variance;
        scale_out[o] = scale;
        shift_out[o] = beta[o] - mean * scale;
        running_statistics(o, mean, variance, gamma, beta, running_mean, running_var, running_scale, running_shift,
                           momentum, unbiased);
    }
}

// Softmax and filtering at the output positions from the full-resolution map (training).
// Global (W', H', N).
__kernel void adaptive_forward_from_map(
    __global const float *x, __global const float *map, __global const float *scale, __global const float *shift,
    __global const int *row_source, __global const int *col_source, __global float *y, __global float *filters,
    int batch, int height, int width, int out_height, int out_width) {
    int j = get_global_id(0);
    int i = get_global_id(1);
    int n = get_global_id(2);
    if (j >= out_width || i >= out_height || n >= batch) return;
    int plane = height * width;
    int out_plane = out_height * out_width;
    int centre = STRIDE * i * width + STRIDE * j;
    int offsets[KK];
    window_offsets(row_source, col_source, i, j, width, offsets);
    __global const float *xn = x + n * CHANNELS * plane;
    float logits[KK];
    float maximum = -INFINITY;
    float total = 0.0f;
#if JOINT
    for (int g = 0; g < GROUPS; ++g) {
        group_logits_from_map(map, scale, shift, n, g, plane, centre, logits);
        for (int t = 0; t < KK; ++t) online_softmax(logits[t], &maximum, &total);
    }
#endif
    for (int g = 0; g < GROUPS; ++g) {
        group_logits_from_map(map, scale, shift, n, g, plane, centre, logits);
        softmax_and_filter(logits, maximum, total, xn, offsets, plane, n, g, i * out_width + j, out_plane, y, filters);
    }
}

// ---- Backward ----

// At each output position: the filters w, dL/dw[o] = sum_{c in g(o)} gy[c] * xpad(c, tap),
// and the softmax backward dL/dz = w * (dL/dw - sum_set w * dL/dw). Writes weights and
// grad_z (N x P x H' x W'); grad_z holds dL/dw until the last pass. Global (W', H', N).
__kernel void adaptive_backward_softmax(
    __global const float *x, __global const float *map, __global const float *scale, __global const float *shift,
    __global const int *row_source, __global const int *col_source, __global const float *grad_y,
    __global float *weights, __global float *grad_z, int batch, int height, int width, int out_height,
    int out_width) {
    int j = get_global_id(0);
    int i = get_global_id(1);
    int n = get_global_id(2);
    if (j >= out_width || i >= out_height || n >= batch) return;
    int plane = height * width;
    int out_plane = out_height * out_width;
    int position = i * out_width + j;
    int centre = STRIDE * i * width + STRIDE * j;
    int offsets[KK];
    window_offsets(row_source, col_source, i, j, width, offsets);
    __global const float *xn = x + n * CHANNELS * plane;
    float logits[KK];
    float maximum = -INFINITY;
    float total = 0.0f;
#if JOINT
    for (int g = 0; g < GROUPS; ++g) {
        group_logits_from_map(map, scale, shift, n, g, plane, centre, logits);
        for (int t = 0; t < KK; ++t) online_softmax(logits[t], &maximum, &total);
    }
    float inner = 0.0f;
#endif
    for (int g = 0; g < GROUPS; ++g) {
        group_logits_from_map(map, scale, shift, n, g, plane, centre, logits);
#if !JOINT
        maximum = -INFINITY;
        total = 0.0f;
        for (int t = 0; t < KK; ++t) online_softmax(logits[t], &maximum, &total);
        float inner = 0.0f;
#endif
        float inverse = 1.0f / total;
        float grad_w[KK];
        for (int t = 0; t < KK; ++t) {
            logits[t] = exp(logits[t] - maximum) * inverse;
            grad_w[t] = 0.0f;
        }
        for (int c = g * CPG; c < (g + 1) * CPG; ++c) {
            __global const float *xc = xn + c * plane;
            float dy = grad_y[(n * CHANNELS + c) * out_plane + position];
            for (int q = 0; q < KK; ++q) grad_w[q] += dy * load_or_zero(xc, offsets[q]);
        }
        for (int t = 0; t < KK; ++t) {
            int index = (n * P + g * KK + t) * out_plane + position;
            weights[index] = logits[t];
            grad_z[index] = grad_w[t];
            inner += logits[t] * grad_w[t];
        }
#if !JOINT
        for (int t = 0; t < KK; ++t) {
            int index = (n * P + g * KK + t) * out_plane + position;
            grad_z[index] = logits[t] * (grad_w[t] - inner);
        }
#endif
    }
#if JOINT
    for (int o = 0; o < P; ++o) {
        int index = (n * P + o) * out_plane + position;
        grad_z[index] = weights[index] * (grad_z[index] - inner);
    }
#endif
}

// dL/dbeta = sum dL/dz and dL/dgamma = sum dL/dz * xhat over the output positions (dL/dz is
// zero elsewhere). One work-group per channel: global (P * REDUCE), local (REDUCE).
__kernel void adaptive_bn_parameter_gradients(
    __global const float *grad_z, __global const float *map, __global const float *mean,
    __global const float *variance, __global float *grad_gamma, __global float *grad_beta, int batch, int height,
    int width, int out_height, int out_width, __local float *scratch) {
    int o = get_group_id(0);
    int lid = get_local_id(0);
    int out_plane = out_height * out_width;
    int count = batch * out_plane;
    float inverse_std = 1.0f / sqrt(variance[o] + EPSILON);
    float sum_z = 0.0f;
    float sum_zx = 0.0f;
    for (int index = lid; index < count; index += REDUCE) {
        int n = index / out_plane;
        int position = index - n * out_plane;
        int i = position / out_width;
        int j = position - i * out_width;
        float gz = grad_z[(n * P + o) * out_plane + position];
        float xhat = (map[((n * P + o) * height + STRIDE * i) * width + STRIDE * j] - mean[o]) * inverse_std;
        sum_z += gz;
        sum_zx += gz * xhat;
    }
    scratch[lid] = sum_z;
    tree_sum(scratch, lid);
    float total_z = scratch[0];
    barrier(CLK_LOCAL_MEM_FENCE);
    scratch[lid] = sum_zx;
    tree_sum(scratch, lid);
    if (lid == 0) {
        grad_beta[o] = total_z;
        grad_gamma[o] = scratch[0];
    }
}

// dL/da at every full-resolution position. BatchNorm backward with batch statistics:
// gamma * rstd * (dz - sum dz / M - xhat * sum(dz xhat) / M); with frozen (running)
// statistics (`frozen` != 0) the statistics are constants: gamma * rstd * dz.
// Global (W, H, N * P).
__kernel void adaptive_bn_backward(
    __global const float *map, __global const float *grad_z, __global const float *mean,
    __global const float *variance, __global const float *gamma, __global const float *grad_gamma,
    __global const float *grad_beta, __global float *grad_map, int batch, int height, int width, int out_height,
    int out_width, int frozen) {
    int col = get_global_id(0);
    int row = get_global_id(1);
    int nk = get_global_id(2);
    if (col >= width || row >= height || nk >= batch * P) return;
    int o = nk % P;
    float count = (float)(batch * height * width);
    float inverse_std = 1.0f / sqrt(variance[o] + EPSILON);
    int index = (nk * height + row) * width + col;
    float xhat = (map[index] - mean[o]) * inverse_std;
    float gz = 0.0f;
    if (row % STRIDE == 0 && col % STRIDE == 0)
        gz = grad_z[(nk * out_height + row / STRIDE) * out_width + col / STRIDE];
    grad_map[index] = frozen ? gamma[o] * inverse_std * gz
                             : gamma[o] * inverse_std * (gz - grad_beta[o] / count - xhat * grad_gamma[o] / count);
}

// The two conv.weight gradient kernels (adaptive_weight_gradient_rows, adaptive_weight_gradient)
// must give the same bits: no contraction of a * b + c into fma in them (OFF here and before
// adaptive_weight_gradient, ON after adaptive_weight_gradient_sum), since a compiler may contract
// a float8 lane and a scalar differently; the rest of the file keeps its fma.
#pragma OPENCL FP_CONTRACT OFF

// How both conv.weight gradient kernels walk a row, so that they add the same terms in the same
// order: interior columns lo..hi in chunks of 8 (the last chunk overlapping its predecessor),
// then the border columns 0..inner_end and outer_start..width (all columns when a row is
// narrower than 8 + 2p).
typedef struct {
    int lo, hi, vectors, inner_end, outer_start;
} RowSplit;

inline RowSplit weight_gradient_row_split(int width) {
    RowSplit split;
    split.lo = (K - 1) / 2;
    split.hi = max(width - split.lo, split.lo);
    split.vectors = split.hi - split.lo >= 8 ? (split.hi - split.lo + 7) / 8 : 0;
    split.inner_end = split.vectors > 0 ? split.lo : width;
    split.outer_start = split.vectors > 0 ? split.hi : width;
    return split;
}

// dL/dconv.weight[o, c, u, v] = sum over n, y, x of dL/da[n, o, y, x] * xpad[n, c, y + u, x + v]
// (stride-1 tables), without work-groups or atomics: one item per (c, o, n), global (C, P, N),
// summing over rows and columns in that fixed order into partial[n][o][c][tap];
// adaptive_weight_gradient_sum adds the partials over n in order (N items per weight would leave
// a GPU with only C x P work items). Interior columns go 8 positions at a
// time: one vector load of dL/da and K vector loads per tap row of x (padded rows through the
// row table), K*K float8 multiply-adds, so the k*k window is never looked up per position;
// the p border columns of each side (and rows narrower than 8 + 2p) use both tables. The last
// interior chunk of a row overlaps its predecessor and masks its repeated lanes.
__kernel void adaptive_weight_gradient_rows(
    __global const float *grad_map, __global const float *x, __global const int *row_source,
    __global const int *col_source, __global float *partial, int batch, int height, int width) {
    const int c = get_global_id(0);
    const int o = get_global_id(1);
    const int n = get_global_id(2);
    if (c >= CHANNELS || o >= P || n >= batch) return;
    const int p = (K - 1) / 2;
    const int plane = height * width;
    const RowSplit split = weight_gradient_row_split(width);
    const int lo = split.lo;
    const int hi = split.hi;
    const int vectors = split.vectors;
    const int inner_end = split.inner_end;
    const int outer_start = split.outer_start;
    float8 sums[KK];
    for (int t = 0; t < KK; ++t) sums[t] = (float8)(0.0f);
    __global const float *ga = grad_map + (n * P + o) * plane;
    __global const float *xc = x + (n * CHANNELS + c) * plane;
    for (int y = 0; y < height; ++y) {
        for (int unit = 0; unit < vectors; ++unit) {
            const int start = lo + unit * 8;
            const int x0 = min(start, hi - 8);
            const int8 column = (int8)(x0) + (int8)(0, 1, 2, 3, 4, 5, 6, 7);
            const int8 fresh = column >= (int8)(start);
            const float8 g = vload8(0, ga + y * width + x0);
            for (int u = 0; u < K; ++u) {
                const int row = row_source[y * K + u];
                __global const float *line = xc + max(row, 0) * width + x0 - p;
                for (int v = 0; v < K; ++v) {
                    const float8 values = row >= 0 ? vload8(0, line + v) : (float8)(0.0f);
                    sums[u * K + v] += select((float8)(0.0f), g * values, fresh);
                }
            }
        }
        for (int index = 0; index < inner_end + width - outer_start; ++index) {
            const int xx = index < inner_end ? index : outer_start + index - inner_end;
            const float g = ga[y * width + xx];
            for (int u = 0; u < K; ++u) {
                const int row = row_source[y * K + u];
                for (int v = 0; v < K; ++v) {
                    const int col = col_source[xx * K + v];
                    sums[u * K + v].s0 += g * load_or_zero(xc, (row >= 0 && col >= 0) ? row * width + col : -1);
                }
            }
        }
    }
    for (int t = 0; t < KK; ++t) {
        const float8 s = sums[t];
        const float4 a = s.lo + s.hi;
        const float2 b = a.lo + a.hi;
        partial[((n * P + o) * CHANNELS + c) * KK + t] = b.x + b.y;
    }
}

// conv.weight gradient = the per-sample partials of adaptive_weight_gradient_rows summed in
// order of n. Global (P * C * K * K).
__kernel void adaptive_weight_gradient_sum(__global const float *partial, __global float *grad_weight, int batch) {
    const int index = get_global_id(0);
    if (index >= P * CHANNELS * KK) return;
    float sum = 0.0f;
    for (int n = 0; n < batch; ++n) sum += partial[n * P * CHANNELS * KK + index];
    grad_weight[index] = sum;
}
#pragma OPENCL FP_CONTRACT ON

// The filter-tap term of the input gradient at (a, b): output positions whose window reads the
// pixel, with the tap's filter weight (inverted strided tables).
inline float adaptive_tap_gradient(
    __global const float *grad_y, __global const float *weights, __global const int *out_rows,
    __global const int *out_cols, int n, int nc, int g, int a, int b, int out_plane, int out_width) {
    float sum = 0.0f;
    for (int pr = 0; pr < FAN_OUT_ROWS; ++pr) {
        const int er = out_rows[a * FAN_OUT_ROWS + pr];
        if (er < 0) break;
        const int i = er / K;
        const int u = er - i * K;
        for (int pc = 0; pc < FAN_OUT_COLS; ++pc) {
            const int ec = out_cols[b * FAN_OUT_COLS + pc];
            if (ec < 0) break;
            const int j = ec / K;
            const int v = ec - j * K;
            const int position = i * out_width + j;
            sum += grad_y[nc * out_plane + position] * weights[(n * P + g * KK + u * K + v) * out_plane + position];
        }
    }
    return sum;
}

// The input gradient (the filter-tap term plus the predictor's adjoint conv), one item per
// input row: global (H, N * C). Columns plain_lo ... plain_hi - 1 (read by the predictor only
// as an unpadded conv reads them; the host finds them from the inverted table) go 8 at a time:
// per row entry (y, u) of the inverted row table and predictor channel o, K vector loads of
// dL/da and K multiply-adds with broadcast weights. Chunks may overlap at the end (the lanes
// are complete sums, so an overlap stores equal values); the other columns are element by
// element over both inverted tables (entries list (output index * K + tap), -1 padded).
__kernel void adaptive_input_gradient_rows(
    __global const float *grad_y, __global const float *weights, __global const float *grad_map,
    __global const float *conv_weight, __global const int *out_rows, __global const int *out_cols,
    __global const int *full_rows, __global const int *full_cols, __global float *grad_x, int batch, int height,
    int width, int out_height, int out_width, int plain_lo, int plain_hi) {
    const int a = get_global_id(0);
    const int nc = get_global_id(1);
    if (a >= height || nc >= batch * CHANNELS) return;
    const int n = nc / CHANNELS;
    const int c = nc - n * CHANNELS;
    const int g = c / CPG;
    const int p = (K - 1) / 2;
    const int plane = height * width;
    const int out_plane = out_height * out_width;
    __global float *out = grad_x + (nc * height + a) * width;
    const int vectors = plain_hi - plain_lo >= 8 ? (plain_hi - plain_lo + 7) / 8 : 0;
    for (int unit = 0; unit < vectors; ++unit) {
        const int b0 = min(plain_lo + unit * 8, plain_hi - 8);
        float lanes[8];
        for (int lane = 0; lane < 8; ++lane)
            lanes[lane] = adaptive_tap_gradient(grad_y, weights, out_rows, out_cols, n, nc, g, a, b0 + lane, out_plane,
                                                out_width);
        float8 sum = vload8(0, lanes);
        for (int pr = 0; pr < FAN_FULL_ROWS; ++pr) {
            const int er = full_rows[a * FAN_FULL_ROWS + pr];
            if (er < 0) break;
            const int y = er / K;
            const int u = er - y * K;
            for (int o = 0; o < P; ++o) {
                __global const float *line = grad_map + (n * P + o) * plane + y * width + b0 + p;
                __global const float *w = conv_weight + (o * CHANNELS + c) * KK + u * K;
                for (int v = 0; v < K; ++v) sum += w[v] * vload8(0, line - v);
            }
        }
        vstore8(sum, 0, out + b0);
    }
    const int inner_end = vectors > 0 ? plain_lo : width;
    const int outer_start = vectors > 0 ? plain_hi : width;
    for (int index = 0; index < inner_end + width - outer_start; ++index) {
        const int b = index < inner_end ? index : outer_start + index - inner_end;
        float sum = adaptive_tap_gradient(grad_y, weights, out_rows, out_cols, n, nc, g, a, b, out_plane, out_width);
        for (int pr = 0; pr < FAN_FULL_ROWS; ++pr) {
            const int er = full_rows[a * FAN_FULL_ROWS + pr];
            if (er < 0) break;
            const int y = er / K;
            const int u = er - y * K;
            for (int pc = 0; pc < FAN_FULL_COLS; ++pc) {
                const int ec = full_cols[b * FAN_FULL_COLS + pc];
                if (ec < 0) break;
                const int xx = ec / K;
                const int v = ec - xx * K;
                for (int o = 0; o < P; ++o)
                    sum += grad_map[(n * P + o) * plane + y * width + xx] * conv_weight[(o * CHANNELS + c) * KK + u * K + v];
            }
        }
        out[b] = sum;
    }
}

// GPU path of the input and weight gradients (AdaptiveLaunch.rowGradients false): one item per
// element, so neighbouring items touch neighbouring addresses. The row kernels above are 5-6x
// faster on PoCL, but each of their items walks a whole row, which a GPU cannot coalesce (3.4x
// slower there: docs/performance.md, GPU figures).
//
// Input gradient, gathered: the filter-tap path (output positions whose window reads this
// pixel, with the tap's filter weight) plus the predictor path (full-resolution positions
// whose conv window reads it, with the conv weights). Inverted tables list (output index * K +
// tap) entries per input index, -1 padded. Global (W, H, N * C).
__kernel void adaptive_input_gradient(
    __global const float *grad_y, __global const float *weights, __global const float *grad_map,
    __global const float *conv_weight, __global const int *out_rows, __global const int *out_cols,
    __global const int *full_rows, __global const int *full_cols, __global float *grad_x, int batch, int height,
    int width, int out_height, int out_width) {
    int b = get_global_id(0);
    int a = get_global_id(1);
    int nc = get_global_id(2);
    if (b >= width || a >= height || nc >= batch * CHANNELS) return;
    int n = nc / CHANNELS;
    int c = nc - n * CHANNELS;
    int g = c / CPG;
    int plane = height * width;
    int out_plane = out_height * out_width;
    float sum = 0.0f;
    for (int pr = 0; pr < FAN_OUT_ROWS; ++pr) {
        int er = out_rows[a * FAN_OUT_ROWS + pr];
        if (er < 0) break;
        int i = er / K;
        int u = er - i * K;
        for (int pc = 0; pc < FAN_OUT_COLS; ++pc) {
            int ec = out_cols[b * FAN_OUT_COLS + pc];
            if (ec < 0) break;
            int j = ec / K;
            int v = ec - j * K;
            int position = i * out_width + j;
            sum += grad_y[nc * out_plane + position] * weights[(n * P + g * KK + u * K + v) * out_plane + position];
        }
    }
    for (int pr = 0; pr < FAN_FULL_ROWS; ++pr) {
        int er = full_rows[a * FAN_FULL_ROWS + pr];
        if (er < 0) break;
        int y = er / K;
        int u = er - y * K;
        for (int pc = 0; pc < FAN_FULL_COLS; ++pc) {
            int ec = full_cols[b * FAN_FULL_COLS + pc];
            if (ec < 0) break;
            int xx = ec / K;
            int v = ec - xx * K;
            for (int o = 0; o < P; ++o)
                sum += grad_map[(n * P + o) * plane + y * width + xx] * conv_weight[(o * CHANNELS + c) * KK + u * K + v];
        }
    }
    grad_x[(nc * height + a) * width + b] = sum;
}

// dL/dconv.weight[o, c, u, v] = sum over n, y, x of dL/da[n, o, y, x] * xpad[n, c, y + u, x + v],
// with the bits of adaptive_weight_gradient_rows + adaptive_weight_gradient_sum (so that the
// rowGradients knob cannot change the gradient): one work-group per (o, c), its items taken as
// REDUCE / 8 samples x 8 lanes; lane l of sample n adds exactly what lane l of the row kernel's
// float8 sums adds, in the same order (rows in order; per row its interior chunk columns, then,
// lane 0 only, the border columns), the 8 lanes are joined by the row kernel's tree (l + 4,
// then + 2, then + 1) and item 0 adds the samples' sums in order of n. Neighbouring lanes read
// neighbouring columns (coalesced on GPUs). Global (P * C * REDUCE), local (REDUCE), scratch
// REDUCE * K * K floats; stride-1 tables.
#pragma OPENCL FP_CONTRACT OFF
#if REDUCE % 8 != 0
#error "REDUCE must be a multiple of 8 (adaptive_weight_gradient's lanes)"
#endif
__kernel void adaptive_weight_gradient(
    __global const float *grad_map, __global const float *x, __global const int *row_source,
    __global const int *col_source, __global float *grad_weight, int batch, int height, int width,
    __local float *scratch) {
    const int e = get_group_id(0);
    const int lid = get_local_id(0);
    const int c = e % CHANNELS;
    const int o = e / CHANNELS;
    const int lane = lid % 8;
    const int sample = lid / 8;
    const int p = (K - 1) / 2;
    const int plane = height * width;
    const RowSplit split = weight_gradient_row_split(width);
    const int lo = split.lo;
    const int hi = split.hi;
    const int vectors = split.vectors;
    const int inner_end = split.inner_end;
    const int outer_start = split.outer_start;
    float totals[KK];
    for (int t = 0; t < KK; ++t) totals[t] = 0.0f;
    for (int n0 = 0; n0 < batch; n0 += REDUCE / 8) {
        const int n = n0 + sample;
        float sums[KK];
        for (int t = 0; t < KK; ++t) sums[t] = 0.0f;
        if (n < batch) {
            __global const float *ga = grad_map + (n * P + o) * plane;
            __global const float *xc = x + (n * CHANNELS + c) * plane;
            for (int y = 0; y < height; ++y) {
                for (int unit = 0; unit < vectors; ++unit) {
                    const int start = lo + unit * 8;
                    const int column = min(start, hi - 8) + lane;
                    const float g = ga[y * width + column];
                    for (int u = 0; u < K; ++u) {
                        const int row = row_source[y * K + u];
                        __global const float *line = xc + max(row, 0) * width + column - p;
                        for (int v = 0; v < K; ++v) {
                            const float value = row >= 0 ? line[v] : 0.0f;
                            sums[u * K + v] += column >= start ? g * value : 0.0f;
                        }
                    }
                }
                for (int index = 0; lane == 0 && index < inner_end + width - outer_start; ++index) {
                    const int xx = index < inner_end ? index : outer_start + index - inner_end;
                    const float g = ga[y * width + xx];
                    for (int u = 0; u < K; ++u) {
                        const int row = row_source[y * K + u];
                        for (int v = 0; v < K; ++v) {
                            const int col = col_source[xx * K + v];
                            sums[u * K + v] += g * load_or_zero(xc, (row >= 0 && col >= 0) ? row * width + col : -1);
                        }
                    }
                }
            }
        }
        for (int t = 0; t < KK; ++t) scratch[t * REDUCE + lid] = sums[t];
        for (int span = 4; span > 0; span /= 2) {
            barrier(CLK_LOCAL_MEM_FENCE);
            if (lane < span) {
                for (int t = 0; t < KK; ++t) scratch[t * REDUCE + lid] += scratch[t * REDUCE + lid + span];
            }
        }
        barrier(CLK_LOCAL_MEM_FENCE);
        if (lid == 0) {
            for (int k = 0; k < REDUCE / 8 && n0 + k < batch; ++k)
                for (int t = 0; t < KK; ++t) totals[t] += scratch[t * REDUCE + 8 * k];
        }
        barrier(CLK_LOCAL_MEM_FENCE);
    }
    if (lid == 0) {
        for (int t = 0; t < KK; ++t) grad_weight[e * KK + t] = totals[t];
    }
}
