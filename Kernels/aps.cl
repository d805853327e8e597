// APSPool2D (SPEC.md section 5): adaptive polyphase sampling, forward and backward.
//
// Phases of an even-sized map by (row offset a, column offset b): k = a + 2 b, so p0 = (0,0),
// p1 = (1,0), p2 = (0,1), p3 = (1,1).
//
// Odd sizes: padded row H copies row 0, padded column W copies column 0.
//
//   aps_partial_norms  global (chunks * GROUP_SIZE, N): `chunks` work-groups per SAMPLE; the
//                  padded rows of a sample are summed over a fixed set of lanes (reduce_lanes:
//                  lane l takes rows l, l + lanes, ...; chunk c owns lanes c + b chunks), each
//                  row's four phase norms added whole, then the first levels of the lanes' tree.
//   aps_pick       global (N): the last levels of the tree over the chunk norms, then the argmax
//                  (ties: lowest k; the first NaN wins, as torch.argmax). Deterministic: every
//                  addition's order depends only on the sizes, not on GROUP_SIZE or the chunk
//                  count. NORM: 0 l2 (sum of squares, the same order as the norm), 1 l1, 2 linf.
//   aps_gather     global (out cols / 8, out rows, planes): y = padded x at (2i + a, 2j + b),
//                  8 outputs per item (one 16-wide load, even lanes).
//   aps_scatter    global (cols / 16, rows, planes) of the input: the gather's adjoint, as a
//                  gather (each input element collects from the at most one padded position of
//                  the chosen phase that copies it), so no atomics; 16 columns per item.
//
// Determinism: no result depends on GROUP_SIZE or the chunk count; a sample's sum runs over
// lanes fixed by the sizes (reduce_lanes in reduce_lanes.h).
//
// Defines: GROUP_SIZE (power of two), NORM (0 l2, 1 l1, 2 linf).
#include "common.h"

#ifndef GROUP_SIZE
#define GROUP_SIZE 64
#endif
#ifndef NORM
#define NORM 0
#endif

#include "reduce_lanes.h"

// Adds one value to a running norm.
inline float norm_accumulate(float total, float value) {
#if NORM == 0
    return total + value * value;
#elif NORM == 1
    return total + fabs(value);
#else
    const float magnitude = fabs(value);
    // Keeps a NaN total; otherwise a NaN or larger magnitude replaces it.
    return (!isnan(total) && (isnan(magnitude) || magnitude > total)) ? magnitude : total;
#endif
}

// Joins two partial norms.
inline float norm_combine(float total, float other) {
#if NORM == 2
    return (!isnan(total) && (isnan(other) || other > total)) ? other : total;
#else
    return total + other;
#endif
}

// Stage 1 of the phase choice. Global (chunks * GROUP_SIZE, N), local (GROUP_SIZE, 1): the
// padded rows of a sample (C * padded H of them) are dealt out to the sample's `chunks`
// work-groups round robin, so a GPU gets N * chunks work-groups instead of N. Writes the four
// phase norms of the work-group's rows to partial_norms[(sample * chunks + chunk) * 4 + k].
__kernel __attribute__((reqd_work_group_size(GROUP_SIZE, 1, 1)))
void aps_partial_norms(__global const float *x, __global float *partial_norms, int channels, int height,
                       int width) {
    __local float partial[4 * REDUCE_LANES];
    const int chunk = get_group_id(0);
    const int chunks = get_num_groups(0);
    const int sample = get_group_id(1);
    const int item = get_local_id(0);
    const int padded_height = height + (height & 1);
    const int pairs = width / 2;
    const int rows = channels * padded_height;
    // The sample's lanes (see reduce_lanes; the host keeps `chunks` a power of two no larger):
    // this work-group owns lanes chunk + b * chunks, b < per_chunk.
    const int lanes = reduce_lanes(rows);
    const int per_chunk = lanes / chunks;
    for (int b = item; b < per_chunk; b += GROUP_SIZE) {
        const int lane = chunk + b * chunks;
        float acc[4] = {0.0f, 0.0f, 0.0f, 0.0f};
        for (int row = lane; row < rows; row += lanes) {
            const int channel = row / padded_height;
            const int r = row - channel * padded_height;
            const int source_row = r < height ? r : 0;
            __global const float *line = x + plane_offset(sample * channels + channel, source_row, 0, height, width);
            float even = 0.0f;
            float odd = 0.0f;
            for (int j = 0; j < pairs; ++j) {
                even = norm_accumulate(even, line[2 * j]);
                odd = norm_accumulate(odd, line[2 * j + 1]);
            }
            if (width & 1) {
                even = norm_accumulate(even, line[width - 1]);
                odd = norm_accumulate(odd, line[0]);
            }
            const int a = r & 1;
            acc[a] = norm_combine(acc[a], even);
            acc[a + 2] = norm_combine(acc[a + 2], odd);
        }
        for (int k = 0; k < 4; ++k) partial[k * REDUCE_LANES + b] = acc[k];
    }
    barrier(CLK_LOCAL_MEM_FENCE);
    // The first levels of the sample's tree: lane j + span with span >= chunks stays in this
    // work-group (b + span / chunks); aps_pick runs the levels below chunks.
    for (int span = per_chunk / 2; span > 0; span >>= 1) {
        for (int b = item; b < span; b += GROUP_SIZE) {
            for (int k = 0; k < 4; ++k) {
                partial[k * REDUCE_LANES + b] =
                    norm_combine(partial[k * REDUCE_LANES + b], partial[k * REDUCE_LANES + b + span]);
            }
        }
        barrier(CLK_LOCAL_MEM_FENCE);
    }
    if (item < 4) partial_norms[(sample * chunks + chunk) * 4 + item] = partial[item * REDUCE_LANES];
}

// Stage 2. Global (N): the last levels of each sample's lane tree over its chunk norms (in
// place: chunk c takes chunk c + span, span = chunks / 2 ... 1), then the argmax. With stage 1
// this is one fixed tree over the sample's lanes, whatever the chunk count and GROUP_SIZE.
__kernel void aps_pick(__global float *partial_norms, __global float *indices, int samples, int chunks) {
    const int sample = get_global_id(0);
    if (sample >= samples) return;
    __global float *norms = partial_norms + sample * chunks * 4;
    for (int span = chunks / 2; span > 0; span >>= 1) {
        for (int c = 0; c < span; ++c) {
            for (int k = 0; k < 4; ++k) norms[c * 4 + k] = norm_combine(norms[c * 4 + k], norms[(c + span) * 4 + k]);
        }
    }
    float total[4] = {norms[0], norms[1], norms[2], norms[3]};
    int best = 0;
    for (int k = 1; k < 4; ++k) best = replaces_maximum(total[k], total[best]) ? k : best;
    indices[sample] = (float)best;
}

// The phase of `sample` as an int in 0...3 (NaN and out-of-range given indices are clamped, so
// a bad index can never address memory outside the input).
inline int phase_of(__global const float *indices, int sample) {
    const float value = indices[sample];
    return isnan(value) ? 0 : clamp((int)clamp(value, 0.0f, 3.0f), 0, 3);
}

// One item per 8 outputs of a row (global (ceil(out cols / 8), out rows, planes)): the phase's
// source columns 2 j + b of 8 outputs are the even lanes of one 16-wide load, where the load
// stays inside the row; the last chunk of a row (and the padded column of odd widths) goes
// element by element.
__kernel void aps_gather(__global const float *x, __global const float *indices, __global float *y, int planes,
                         int channels, int height, int width, int out_height, int out_width) {
    const int j0 = get_global_id(0) * 8;
    const int i = get_global_id(1);
    const int plane = get_global_id(2);
    if (j0 >= out_width || i >= out_height || plane >= planes) return;
    const int phase = phase_of(indices, plane / channels);
    const int r = 2 * i + (phase & 1);
    const int b = phase >> 1;
    const int source_row = r < height ? r : 0;
    __global const float *line = x + plane_offset(plane, source_row, 0, height, width);
    __global float *out = y + plane_offset(plane, i, 0, out_height, out_width);
    if (j0 + 8 <= out_width && 2 * j0 + b + 16 <= width) {
        vstore8(vload16(0, line + 2 * j0 + b).even, 0, out + j0);
    } else {
        for (int j = j0; j < min(j0 + 8, out_width); ++j) {
            const int s = 2 * j + b;
            out[j] = line[s < width ? s : 0];
        }
    }
}

// The gather's adjoint, as a gather (each input element collects from the at most one padded
// position of the chosen phase that copies it), so no atomics. One item per 16 input columns
// (global (ceil(cols / 16), rows, planes)): away from column 0 the chunk is the 8 gradients of
// its row interleaved with zeros; column 0 of odd widths (copied by the padded column) and a
// partial last chunk go element by element.
__kernel void aps_scatter(__global const float *grad_y, __global const float *indices, __global float *grad_x,
                          int planes, int channels, int height, int width, int out_height, int out_width) {
    const int s0 = get_global_id(0) * 16;
    const int r = get_global_id(1);
    const int plane = get_global_id(2);
    if (s0 >= width || r >= height || plane >= planes) return;
    const int phase = phase_of(indices, plane / channels);
    const int a = phase & 1;
    const int b = phase >> 1;
    // The padded row that copies input row r with parity a: r itself, or (r = 0, H odd) row H.
    const int padded_row = ((r & 1) == a) ? r : ((r == 0 && (height & 1)) ? height : -1);
    __global float *out = grad_x + plane_offset(plane, r, 0, height, width);
    if (s0 > 0 && s0 + 16 <= width) {
        float8 g = (float8)(0.0f);
        if (padded_row >= 0) g = vload8(0, grad_y + plane_offset(plane, padded_row / 2, s0 / 2, out_height, out_width));
        const float8 zero = (float8)(0.0f);
        const float16 chunk = b == 0 ? (float16)(g.s0, 0.0f, g.s1, 0.0f, g.s2, 0.0f, g.s3, 0.0f, g.s4, 0.0f, g.s5,
                                                 0.0f, g.s6, 0.0f, g.s7, 0.0f)
                                     : (float16)(0.0f, g.s0, 0.0f, g.s1, 0.0f, g.s2, 0.0f, g.s3, 0.0f, g.s4, 0.0f,
                                                 g.s5, 0.0f, g.s6, 0.0f, g.s7);
        vstore16(chunk, 0, out + s0);
    } else {
        for (int s = s0; s < min(s0 + 16, width); ++s) {
            const int padded_col = ((s & 1) == b) ? s : ((s == 0 && (width & 1)) ? width : -1);
            const int source = (padded_row >= 0 && padded_col >= 0)
                                   ? plane_offset(plane, padded_row / 2, padded_col / 2, out_height, out_width)
                                   : -1;
            out[s] = load_or_zero(grad_y, source);
        }
    }
}
