// Separable weighted windows: BlurPool (binomial taps, any padding mode), AvgPool (box taps,
// zero padding) and the fused MaxBlurPool (the same blur read through an on-the-fly 2x2 max).
//
// Every kernel reads per-axis tables built on the host (Sources/Nyquist/Plans/AxisTables.swift):
//   forward  row_source[i * TAPS + u]        input row read by tap u of output row i (-1: zero)
//            row_weight[i * TAPS + u]        that tap's weight
//   backward row_target[a * FAN_IN_ROWS + p] p-th output row that reads input row a (-1: none)
//            row_weight[a * FAN_IN_ROWS + p] the summed weight it reads it with
// and the same for columns. Padding (reflect, replicate, circular, zero) is folded into the
// tables, so the inner loops have no border branches and the backward pass is a gather: each
// work item owns one input element and sums what it contributed to, with no atomics, in a
// fixed order, so results are deterministic.
//
// Both passes are split so that borders cost nothing in the bulk of the map: the host launches
// an *_interior kernel over the elements whose taps are all in range (affine indices, taps
// from constant memory, no tables) and the table kernel over the border strips only, with a
// remapping of its work-item indices onto the strips. The *_vector kernels read rows through
// the row tables (one read per tap row, the same for every lane), so they also cover the top
// and bottom rows and leave only the left and right strips to the table kernel, or compute
// those too in one extra work item per row (folded sides, window_vector.h), with the same
// *_element functions the table kernels use.
//
// Defines:
//   TAPS          forward window size per axis (filter size k)
//   STRIDE        subsampling stride (interior kernels)
//   FAN_IN_ROWS   backward table width along H (largest number of output rows reading a row)
//   FAN_IN_COLS   backward table width along W
//   MAX_MAP       1: the filtered map is the stride-1 2x2 max of x ((H-1) x (W-1), MaxBlurPool)
//   OUTPUTS_PER_ITEM  2, 4 or 8: the *_vector kernels (STRIDE 2) compute that many consecutive
//                 elements along W per work item with OpenCL vector types (PoCL's CPU device
//                 runs the one-element kernels as scalar code: their loads are strided across
//                 work items)
//   ROWS_PER_ITEM weighted_window_interior_vector: consecutive output rows per work item
//                 (1 to 8), sharing the horizontal sums of the padded rows they have in common
//
// Work-item mapping: global (columns, rows, planes) of the output (forward) or of the filtered
// map (backward); each work item computes one element, or OUTPUTS_PER_ITEM consecutive ones
// along W in the *_vector kernels (global 0 = columns / OUTPUTS_PER_ITEM: the host hands the
// columns that do not fill a whole vector to the table kernel with the border strips).
// weighted_window_interior_vector also takes ROWS_PER_ITEM consecutive output rows per item
// (global 1 = ceil(rows / ROWS_PER_ITEM), the last block moved up to end at the last row), and
// its folded side item takes the side columns of those rows: R rows of OUTPUTS_PER_ITEM
// columns per item, so neighbouring items still read neighbouring columns (coalesced on a
// GPU), and each item computes each padded row's horizontal sums once for all its rows.
#include "common.h"

// No contraction of a * b + c into fma: the scalar, vector and table kernels must round each
// product and each sum alike for their results to have the same bits (a compiler may contract
// one form of an expression and not another, e.g. a product under a select).
#pragma OPENCL FP_CONTRACT OFF

#ifndef TAPS
#define TAPS 4
#endif
#ifndef FAN_IN_ROWS
#define FAN_IN_ROWS 2
#endif
#ifndef FAN_IN_COLS
#define FAN_IN_COLS 2
#endif
#ifndef MAX_MAP
#define MAX_MAP 0
#endif
#ifndef STRIDE
#define STRIDE 2
#endif
#ifndef OUTPUTS_PER_ITEM
#define OUTPUTS_PER_ITEM 1
#endif
#ifndef ROWS_PER_ITEM
#define ROWS_PER_ITEM 1
#endif
// Outputs reading one interior map element per axis: ceil(TAPS / STRIDE).
#define AFFINE_FAN ((TAPS + STRIDE - 1) / STRIDE)
#include "window_vector.h"

// Element (row, col) of the map being filtered, for in-range indices.
inline float map_value(__global const float *image, int row, int col, int width) {
#if MAX_MAP
    __global const float *top = image + row * width + col;
    float best = top[0];
    float candidate = top[1];
    best = replaces_maximum(candidate, best) ? candidate : best;
    candidate = top[width];
    best = replaces_maximum(candidate, best) ? candidate : best;
    candidate = top[width + 1];
    best = replaces_maximum(candidate, best) ? candidate : best;
    return best;
#else
    return image[row * width + col];
#endif
}

// Tap row `row` (a row-table entry, -1: zero padding, summed from row 0 and dropped by the
// caller) of the output column whose column taps read `sources` with `col_weights`.
inline float window_row_sum(
    __global const float *image, int row, const int *sources, const float *col_weights, int width) {
    int safe_row = max(row, 0);
    float row_sum = 0.0f;
#pragma unroll
    for (int v = 0; v < TAPS; ++v) {
        float value = map_value(image, safe_row, max(sources[v], 0), width);
        row_sum += col_weights[v] * (sources[v] >= 0 ? value : 0.0f);
    }
    return row_sum;
}

// Output (i, j) of one plane through the axis tables: any position, borders included.
inline float window_forward_element(
    __global const float *image, __global const int *row_source, __global const float *row_weight,
    __global const int *col_source, __global const float *col_weight, int i, int j, int width) {
    int sources[TAPS];
    float col_weights[TAPS];
    for (int v = 0; v < TAPS; ++v) {
        sources[v] = col_source[j * TAPS + v];
        col_weights[v] = col_weight[j * TAPS + v];
    }
    float sum = 0.0f;
    for (int u = 0; u < TAPS; ++u) {
        int row = row_source[i * TAPS + u];
        sum += row_weight[i * TAPS + u] * (row >= 0 ? window_row_sum(image, row, sources, col_weights, width) : 0.0f);
    }
    return sum;
}

// Output rows/columns whose taps all fall inside the map. height/width are the input's.
__kernel void weighted_window_interior(
    __global const float *x, __global float *y, __constant float *taps,
    int planes, int height, int width, int out_height, int out_width,
    int row_begin, int rows, int col_begin, int cols, int pad_top, int pad_left) {
    int jj = get_global_id(0);
    int ii = get_global_id(1);
    int plane = get_global_id(2);
    if (jj >= cols || ii >= rows || plane >= planes) return;
    int i = row_begin + ii;
    int j = col_begin + jj;
    __global const float *window =
        x + plane * height * width + (STRIDE * i - pad_top) * width + (STRIDE * j - pad_left);
    float sum = 0.0f;
    for (int u = 0; u < TAPS; ++u) {
        float row_sum = 0.0f;
        for (int v = 0; v < TAPS; ++v) {
            row_sum += taps[v] * map_value(window, u, v, width);
        }
        sum += taps[u] * row_sum;
    }
    y[plane_offset(plane, i, j, out_height, out_width)] = sum;
}

// Tap row `source_row` (a row-table entry; -1 reads row 0, weighted 0 by the caller) of the
// vector of outputs whose leftmost tap column is `window`: sum over v of taps[v] * map(row, 2o + v).
inline VECTOR horizontal_taps(__global const float *window, __constant float *taps, int source_row, int width) {
    __global const float *row = window + max(source_row, 0) * width;
#if MAX_MAP
    // Map element (u, c) is the maximum of x at (u, c), (u, c+1), (u+1, c), (u+1, c+1): the
    // vertical maxima first, shared by neighbouring taps. Any NaN makes it NaN, so the
    // order of comparison only matters for ties, which have the same value.
    VECTOR vertical[TAPS + 1];
    for (int v = 0; v <= TAPS; ++v) vertical[v] = VECTOR_MAX(STRIDED(row + v), STRIDED(row + width + v));
#endif
    VECTOR horizontal = (VECTOR)(0.0f);
    for (int v = 0; v < TAPS; ++v) {
#if MAX_MAP
        VECTOR value = VECTOR_MAX(vertical[v], vertical[v + 1]);
#else
        VECTOR value = STRIDED(row + v);
#endif
        horizontal += taps[v] * value;
    }
    return horizontal;
}

// The row loop of weighted_window_interior_vector: ROWS_PER_ITEM output rows from first, with
// HORIZONTAL (an expression of source_row) the tap row sums. horizontal[u] holds tap row u of
// the current output row; the loops are fully unrolled, so the array lives in registers.
#define VECTOR_ROWS(HORIZONTAL)                                                                    \
    VECTOR horizontal[TAPS];                                                                       \
    _Pragma("unroll") for (int u = 0; u < TAPS; ++u) {                                             \
        int source_row = row_source[first * TAPS + u];                                             \
        horizontal[u] = HORIZONTAL;                                                                \
    }                                                                                              \
    _Pragma("unroll") for (int r = 0; r < ROWS_PER_ITEM; ++r) {                                    \
        int i = first + r;                                                                         \
        if (r > 0) {                                                                               \
            _Pragma("unroll") for (int u = 0; u < TAPS; ++u) {                                     \
                int source_row = row_source[i * TAPS + u];                                         \
                if (u + 2 < TAPS) horizontal[u] = horizontal[u + 2];                               \
                else horizontal[u] = HORIZONTAL;                                                   \
            }                                                                                      \
        }                                                                                          \
        VECTOR sum = (VECTOR)(0.0f);                                                               \
        _Pragma("unroll") for (int u = 0; u < TAPS; ++u) {                                         \
            sum += (row_source[i * TAPS + u] >= 0 ? taps[u] : 0.0f) * horizontal[u];               \
        }                                                                                          \
        VSTORE(sum, 0, y + plane_offset(plane, i, j, out_height, out_width));                      \
    }

// weighted_window_interior with OUTPUTS_PER_ITEM consecutive outputs per work item, STRIDE 2
// only: each tap's samples along W are the even lanes of one wide load (window_vector.h).
// Rows come from the row table (row_begin, rows: any rows, border ones included): a row index
// is the same for the whole vector, so a padded row costs one table read and no gather, and
// the host needs no launch for the top and bottom strips. Zero-padded rows (-1) read row 0
// with weight 0, so no load depends on a branch.
//
// ROWS_PER_ITEM consecutive output rows per work item (global 1 = ceil(rows / ROWS_PER_ITEM);
// the last block is moved up to end at the last row, as the last vector is moved left, so
// the host keeps rows >= ROWS_PER_ITEM). Output row i reads padded rows 2i ... 2i + TAPS - 1,
// so the next row shares TAPS - 2 of them: the item keeps the horizontal sums of the current
// row's taps and computes only 2 new ones per further row, about (2 R + TAPS - 2) / (R TAPS)
// of the horizontal work (the bulk of the arithmetic and of the loads) of one row per item.
// A padded row maps to one input row whatever the padding mode, so reusing a sum is exact, and
// every output is still the same expression in the same order (the same bits for every R).
__kernel void weighted_window_interior_vector(
    __global const float *x, __global float *y, __constant float *taps, __global const int *row_source,
    __global const int *table_row_source, __global const float *row_weight,
    __global const int *col_source, __global const float *col_weight, SIDE_ARGUMENTS,
    int planes, int height, int width, int out_height, int out_width,
    int row_begin, int rows, int col_begin, int cols, int pad_top, int pad_left) {
    int block = get_global_id(1);
    int plane = get_global_id(2);
    if (block * ROWS_PER_ITEM >= rows || plane >= planes) return;
    // The last block ends at the last row (overlapped rows are written twice with the same bits).
    int first = row_begin + min(block * ROWS_PER_ITEM, rows - ROWS_PER_ITEM);
    if (IS_SIDE_ITEM(cols)) {
        // The side columns through the tables, sharing tap rows between output rows as the
        // vectors do: window_forward_element's terms in its order, so the same bits.
        __global const float *image = x + plane * height * width;
        for (int side = 0; side < side_cols; ++side) {
            int j = strip_index(side, 0, side_split, side_jump);
            int sources[TAPS];
            float col_weights[TAPS];
#pragma unroll
            for (int v = 0; v < TAPS; ++v) {
                sources[v] = col_source[j * TAPS + v];
                col_weights[v] = col_weight[j * TAPS + v];
            }
            float row_sums[TAPS];
#pragma unroll
            for (int r = 0; r < ROWS_PER_ITEM; ++r) {
                int i = first + r;
#pragma unroll
                for (int u = 0; u < TAPS; ++u) {
                    if (r == 0 || u + 2 >= TAPS) {
                        row_sums[u] = window_row_sum(image, table_row_source[i * TAPS + u], sources, col_weights, width);
                    } else {
                        row_sums[u] = row_sums[u + 2];
                    }
                }
                float sum = 0.0f;
#pragma unroll
                for (int u = 0; u < TAPS; ++u) {
                    sum += row_weight[i * TAPS + u] * (table_row_source[i * TAPS + u] >= 0 ? row_sums[u] : 0.0f);
                }
                y[plane_offset(plane, i, j, out_height, out_width)] = sum;
            }
        }
        return;
    }
    if (get_global_id(0) * OUTPUTS_PER_ITEM >= cols) return;
    // The last vector ends at the last column (see LAST_VECTOR_NOTE in window_vector.h).
    int jj = min((int)get_global_id(0) * OUTPUTS_PER_ITEM, cols - OUTPUTS_PER_ITEM);
    int j = col_begin + jj;
    __global const float *window = x + plane * height * width + (2 * j - pad_left);
    VECTOR_ROWS(horizontal_taps(window, taps, source_row, width))
}

// Any outputs, through the axis tables. The work items cover `rows` x `cols` positions that are
// remapped onto output rows/columns: index k maps to base + k + (k >= split ? jump : 0), which
// lets one launch cover the left and right strips (or the top and bottom ones) together.
// height/width are the input's; out_height/out_width the output's.
__kernel void weighted_window_forward(
    __global const float *x, __global float *y,
    __global const int *row_source, __global const float *row_weight,
    __global const int *col_source, __global const float *col_weight,
    int planes, int height, int width, int out_height, int out_width,
    STRIP_PARAMETERS) {
    int i, j, plane;
    if (!strip_position(STRIP_ARGUMENTS, planes, &i, &j, &plane)) return;
    y[plane_offset(plane, i, j, out_height, out_width)] = window_forward_element(
        x + plane * height * width, row_source, row_weight, col_source, col_weight, i, j, width);
}

// Element (a, b) of one plane of the adjoint of weighted_window_forward with MAX_MAP 0
// (grad_map = A_rows^T grad_y A_cols) through the backward tables: any position.
inline float window_backward_element(
    __global const float *gradient, __global const int *row_target, __global const float *row_weight,
    __global const int *col_target, __global const float *col_weight, int a, int b, int out_width) {
    int targets[FAN_IN_COLS];
    float col_weights[FAN_IN_COLS];
    for (int q = 0; q < FAN_IN_COLS; ++q) {
        targets[q] = col_target[b * FAN_IN_COLS + q];
        col_weights[q] = col_weight[b * FAN_IN_COLS + q];
    }
    float sum = 0.0f;
    for (int p = 0; p < FAN_IN_ROWS; ++p) {
        int row = row_target[a * FAN_IN_ROWS + p];
        __global const float *gradient_row = gradient + max(row, 0) * out_width;
        float row_sum = 0.0f;
        for (int q = 0; q < FAN_IN_COLS; ++q) {
            float value = gradient_row[max(targets[q], 0)];
            row_sum += col_weights[q] * (targets[q] >= 0 ? value : 0.0f);
        }
        sum += row_weight[a * FAN_IN_ROWS + p] * (row >= 0 ? row_sum : 0.0f);
    }
    return sum;
}

// Adjoint of the forward pass on map elements away from the borders: element a receives from
// the outputs i = (a + pad - u) / STRIDE of the taps u congruent to a + pad modulo STRIDE, at
// most AFFINE_FAN of them per axis. Taps past TAPS (when STRIDE does not divide TAPS) are
// masked with a select.
__kernel void weighted_window_backward_interior(
    __global const float *grad_y, __global float *grad_map, __constant float *taps,
    int planes, int height, int width, int out_height, int out_width,
    int row_begin, int rows, int col_begin, int cols, int pad_top, int pad_left) {
    int jj = get_global_id(0);
    int ii = get_global_id(1);
    int plane = get_global_id(2);
    if (jj >= cols || ii >= rows || plane >= planes) return;
    int a = row_begin + ii;
    int b = col_begin + jj;
    __global const float *gradient = grad_y + plane * out_height * out_width;
    int row_phase = (a + pad_top) % STRIDE;
    int col_phase = (b + pad_left) % STRIDE;
    int cols_read[AFFINE_FAN];
    float col_weights[AFFINE_FAN];
    bool col_valid[AFFINE_FAN];
    for (int q = 0; q < AFFINE_FAN; ++q) {
        int v = col_phase + q * STRIDE;
        col_valid[q] = v < TAPS;
        col_weights[q] = taps[min(v, TAPS - 1)];
        cols_read[q] = max((b + pad_left - v) / STRIDE, 0);
    }
    // Taps in decreasing order: increasing output rows and columns, the order of the tables
    // (window_backward_element), so every kernel adds an element's terms in one sequence.
    float sum = 0.0f;
    for (int p = AFFINE_FAN - 1; p >= 0; --p) {
        int u = row_phase + p * STRIDE;
        __global const float *gradient_row = gradient + max((a + pad_top - u) / STRIDE, 0) * out_width;
        float row_sum = 0.0f;
        for (int q = AFFINE_FAN - 1; q >= 0; --q) {
            float value = gradient_row[cols_read[q]];
            row_sum += col_valid[q] ? col_weights[q] * value : 0.0f;
        }
        sum += u < TAPS ? taps[min(u, TAPS - 1)] * row_sum : 0.0f;
    }
    grad_map[plane_offset(plane, a, b, height, width)] = sum;
}

// weighted_window_backward_interior with OUTPUTS_PER_ITEM consecutive map elements per work
// item, STRIDE 2 only. The host starts every vector at a column b0 with b0 + pad_left even,
// so lane 2m + e (e = 0, 1) reads exactly the taps v = e, e + 2, ... at gradient column
// (b0 + pad_left) / 2 + m - (v - e) / 2: the even and odd lanes are sums of contiguous loads,
// interleaved at the end. Rows inside affine_begin ... affine_end - 1 (untouched by padding)
// read the AFFINE_FAN gradient rows of their phase directly; the others (border rows) read
// the backward row table (row_target, row_weight as in weighted_window_backward), whose
// FAN_IN_ROWS may be larger. Either way the rows are the same for the whole vector (the
// branch is uniform along a row), so the range may hold any rows and the host needs no
// launch for the top and bottom strips.
__kernel void weighted_window_backward_interior_vector(
    __global const float *grad_y, __global float *grad_map, __constant float *taps,
    __global const int *row_target, __global const float *row_weight, int affine_begin, int affine_end,
    __global const int *table_row_target, __global const float *table_row_weight,
    __global const int *col_target, __global const float *col_weight, SIDE_ARGUMENTS,
    int planes, int height, int width, int out_height, int out_width,
    int row_begin, int rows, int col_begin, int cols, int pad_top, int pad_left) {
    int ii = get_global_id(1);
    int plane = get_global_id(2);
    if (ii >= rows || plane >= planes) return;
    COMPUTE_FOLDED_SIDES(
        cols, a, b, grad_map[plane_offset(plane, a, b, height, width)],
        window_backward_element(
            grad_y + plane * out_height * out_width, table_row_target, table_row_weight, col_target, col_weight, a, b,
            out_width))
    if (get_global_id(0) * OUTPUTS_PER_ITEM >= cols) return;
    // The last vector ends at the last column (see LAST_VECTOR_NOTE in window_vector.h).
    int jj = min((int)get_global_id(0) * OUTPUTS_PER_ITEM, cols - OUTPUTS_PER_ITEM);
    int a = row_begin + ii;
    int b = col_begin + jj;
    __global const float *gradient = grad_y + plane * out_height * out_width + (b + pad_left) / 2;
    HALF even = (HALF)(0.0f);
    HALF odd = (HALF)(0.0f);
    bool affine = a >= affine_begin && a < affine_end;
    int fan = affine ? AFFINE_FAN : FAN_IN_ROWS;
    int row_phase = (a + pad_top) % 2;
    // Affine rows in decreasing tap order, table rows in slot order: increasing output rows
    // either way, as in the one-element kernels, and decreasing taps (increasing output
    // columns) along W, so each lane adds the same terms in the same order as they do.
    for (int slot = 0; slot < fan; ++slot) {
        int p = affine ? AFFINE_FAN - 1 - slot : slot;
        int u = row_phase + 2 * p;
        // Table: unused slots (-1) read row 0 with weight 0, so no load depends on a branch.
        int i = affine ? max((a + pad_top - u) / 2, 0) : row_target[a * FAN_IN_ROWS + p];
        float weight = affine ? (u < TAPS ? taps[min(u, TAPS - 1)] : 0.0f)
                              : (i >= 0 ? row_weight[a * FAN_IN_ROWS + p] : 0.0f);
        __global const float *gradient_row = gradient + max(i, 0) * out_width;
        HALF even_row = (HALF)(0.0f);
        HALF odd_row = (HALF)(0.0f);
        for (int v = (TAPS - 1) & ~1; v >= 0; v -= 2) even_row += taps[v] * HALF_LOAD(gradient_row - v / 2);
        for (int v = TAPS - 1 - (TAPS & 1); v >= 1; v -= 2) odd_row += taps[v] * HALF_LOAD(gradient_row - (v - 1) / 2);
        even += weight * even_row;
        odd += weight * odd_row;
    }
    VSTORE(INTERLEAVE(even, odd), 0, grad_map + plane_offset(plane, a, b, height, width));
}

// window_backward_element for any elements; the host uses it for the border strips (work
// items remapped as in weighted_window_forward). height/width are the filtered map's (the
// input for blur/avg, the max map for MaxBlurPool).
__kernel void weighted_window_backward(
    __global const float *grad_y, __global float *grad_map,
    __global const int *row_target, __global const float *row_weight,
    __global const int *col_target, __global const float *col_weight,
    int planes, int height, int width, int out_height, int out_width,
    STRIP_PARAMETERS) {
    int a, b, plane;
    if (!strip_position(STRIP_ARGUMENTS, planes, &a, &b, &plane)) return;
    grad_map[plane_offset(plane, a, b, height, width)] = window_backward_element(
        grad_y + plane * out_height * out_width, row_target, row_weight, col_target, col_weight, a, b, out_width);
}

// Input element (a, b) of one plane of MaxBlurPool's routing: the sum of the map gradients
// of the (up to four) 2x2 windows whose first maximum (row-major) it is.
inline float max_map_backward_element(
    __global const float *image, __global const float *gradient, int a, int b, int height, int width) {
    float sum = 0.0f;
    for (int dp = 0; dp < 2; ++dp) {
        for (int dq = 0; dq < 2; ++dq) {
            int p = a - 1 + dp;
            int q = b - 1 + dq;
            bool inside = p >= 0 && p < height - 1 && q >= 0 && q < width - 1;
            int safe_p = clamp(p, 0, height - 2);
            int safe_q = clamp(q, 0, width - 2);
            __global const float *top = image + safe_p * width + safe_q;
            // Window order (0,0), (0,1), (1,0), (1,1); this element is window entry (1-dp, 1-dq).
            float best = top[0];
            int winner = 0;
            if (replaces_maximum(top[1], best)) { best = top[1]; winner = 1; }
            if (replaces_maximum(top[width], best)) { best = top[width]; winner = 2; }
            if (replaces_maximum(top[width + 1], best)) { winner = 3; }
            int mine = (1 - dp) * 2 + (1 - dq);
            float contribution = gradient[safe_p * (width - 1) + safe_q];
            sum += (inside && winner == mine) ? contribution : 0.0f;
        }
    }
    return sum;
}

// Second half of MaxBlurPool's backward: routes grad_map ((H-1) x (W-1)) to the first maximum
// (row-major) of each 2x2 window of x. Each work item owns one input element and gathers from
// the up to four windows that contain it. This kernel serves the border strips (work items
// remapped as in weighted_window_forward) and everything when the map is too small for
// max_map_backward_vector; height/width are the input's.
__kernel void max_map_backward(
    __global const float *x, __global const float *grad_map, __global float *grad_x,
    int planes, int height, int width,
    STRIP_PARAMETERS) {
    int a, b, plane;
    if (!strip_position(STRIP_ARGUMENTS, planes, &a, &b, &plane)) return;
    grad_x[plane_offset(plane, a, b, height, width)] = max_map_backward_element(
        x + plane * height * width, grad_map + plane * (height - 1) * (width - 1), a, b, height, width);
}

// max_map_backward for 8 consecutive input elements per work item away from the left and
// right borders (columns whose windows are all inside), any rows: the winners of the 2x2
// windows are found for 8 window columns at once from contiguous vector loads, the same
// first-maximum rule. In the first and last rows, the window row outside the map is read
// clamped (a real row) and its contribution masked, so no load depends on a branch.
// The interior arguments follow the splitDispatch convention (the pads are unused).
__kernel void max_map_backward_vector(
    __global const float *x, __global const float *grad_map, __global float *grad_x, SIDE_ARGUMENTS,
    int planes, int height, int width,
    int row_begin, int rows, int col_begin, int cols, int pad_top, int pad_left) {
    int ii = get_global_id(1);
    int plane = get_global_id(2);
    if (ii >= rows || plane >= planes) return;
    int a = row_begin + ii;
    __global const float *image = x + plane * height * width;
    __global const float *gradient = grad_map + plane * (height - 1) * (width - 1);
    if (get_global_id(0) == (cols + 7) / 8) {
        for (int k = 0; k < side_cols; ++k) {
            int b = strip_index(k, 0, side_split, side_jump);
            grad_x[plane_offset(plane, a, b, height, width)] =
                max_map_backward_element(image, gradient, a, b, height, width);
        }
        return;
    }
    if (get_global_id(0) * 8 >= cols) return;
    // The last vector ends at the last column (see LAST_VECTOR_NOTE in window_vector.h).
    int jj = min((int)get_global_id(0) * 8, cols - 8);
    int b = col_begin + jj;
    float8 sum = (float8)(0.0f);
    for (int dp = 0; dp < 2; ++dp) {
        for (int dq = 0; dq < 2; ++dq) {
            int unclamped = a - 1 + dp;
            int p = clamp(unclamped, 0, height - 2);
            int q = b - 1 + dq;
            __global const float *top = image + p * width + q;
            float8 best = vload8(0, top);
            int8 winner = (int8)(0);
            float8 candidate = vload8(0, top + 1);
            int8 replace = (candidate > best) || (isnan(candidate) && !isnan(best));
            best = select(best, candidate, replace);
            winner = select(winner, (int8)(1), replace);
            candidate = vload8(0, top + width);
            replace = (candidate > best) || (isnan(candidate) && !isnan(best));
            best = select(best, candidate, replace);
            winner = select(winner, (int8)(2), replace);
            candidate = vload8(0, top + width + 1);
            replace = (candidate > best) || (isnan(candidate) && !isnan(best));
            winner = select(winner, (int8)(3), replace);
            // A window row outside the map wins nothing (-1 matches no corner).
            int mine = p == unclamped ? (1 - dp) * 2 + (1 - dq) : -1;
            float8 contribution = vload8(0, gradient + p * (width - 1) + q);
            sum += select((float8)(0.0f), contribution, winner == (int8)(mine));
        }
    }
    vstore8(sum, 0, grad_x + plane_offset(plane, a, b, height, width));
}
