// Max pooling: window KERNEL_SIZE x KERNEL_SIZE, -inf padding, NaN-propagating, and a backward
// that routes each output gradient to the first maximum (row-major) of its window.
//
// Tables from the host (Sources/Nyquist/Plans/AxisTables.swift), per axis:
//   row_source[i * KERNEL_SIZE + u]   input row read by tap u of output row i; padded taps are
//                                     clamped to the nearest row of the same window, which
//                                     cannot change the maximum (padding is at most k/2, so every
//                                     window holds a real row) and never wins a tie before it
//   row_window[a * FAN_IN_ROWS + p]   p-th output row whose window holds input row a (-1: none)
//
// Forward is split like the blur kernels (Sources/Nyquist/Plans/WindowPlans.swift): an interior
// kernel over the outputs whose windows lie inside the input (affine indices, no tables; the
// _vector variant computes OUTPUTS_PER_ITEM consecutive outputs along W with vector types and
// reads rows through the row table, so it covers every row) and the table kernel over the
// border strips (only the left and right ones after the _vector variant, and none when that
// computes them in its extra side item per row, window_vector.h), its work items remapped
// onto the strips.
//
// Backward is a gather: each work item owns one input element and adds the gradients of the
// windows whose first maximum it is. The training forward (max_pool_forward_argmax) saves that
// maximum's flat index in its plane per output, so max_pool_backward_argmax only compares
// indices; max_pool_backward re-finds the maxima from the input when no indices were saved.
// No atomics: results are deterministic.
//
// Work-item mapping: global (columns, rows, planes) of the output (forward) / input (backward);
// global 0 counts vectors of OUTPUTS_PER_ITEM columns in max_pool_forward_interior_vector.
#include "common.h"

#ifndef KERNEL_SIZE
#define KERNEL_SIZE 2
#endif
#ifndef FAN_IN_ROWS
#define FAN_IN_ROWS 1
#endif
#ifndef FAN_IN_COLS
#define FAN_IN_COLS 1
#endif
#ifndef STRIDE
#define STRIDE 2
#endif
#ifndef OUTPUTS_PER_ITEM
#define OUTPUTS_PER_ITEM 1
#endif
#define TAPS KERNEL_SIZE
#include "window_vector.h"

// Flat index (row * width + col) of the first maximum of window (i, j).
inline int window_argmax(__global const float *image, __global const int *row_source,
                         __global const int *col_source, int i, int j, int width) {
    int best_index = row_source[i * KERNEL_SIZE] * width + col_source[j * KERNEL_SIZE];
    float best = image[best_index];
    for (int u = 0; u < KERNEL_SIZE; ++u) {
        int row_base = row_source[i * KERNEL_SIZE + u] * width;
        for (int v = 0; v < KERNEL_SIZE; ++v) {
            int index = row_base + col_source[j * KERNEL_SIZE + v];
            float candidate = image[index];
            bool replace = replaces_maximum(candidate, best);
            best = replace ? candidate : best;
            best_index = replace ? index : best_index;
        }
    }
    return best_index;
}

// Output (i, j) of one plane through the (clamped) tables: any position, borders included.
inline float max_pool_element(__global const float *image, __global const int *row_source,
                              __global const int *col_source, int i, int j, int width) {
    int cols_read[KERNEL_SIZE];
    for (int v = 0; v < KERNEL_SIZE; ++v) cols_read[v] = col_source[j * KERNEL_SIZE + v];
    float best = image[row_source[i * KERNEL_SIZE] * width + cols_read[0]];
    for (int u = 0; u < KERNEL_SIZE; ++u) {
        __global const float *row = image + row_source[i * KERNEL_SIZE + u] * width;
        for (int v = 0; v < KERNEL_SIZE; ++v) {
            float candidate = row[cols_read[v]];
            best = replaces_maximum(candidate, best) ? candidate : best;
        }
    }
    return best;
}

// Gradient through saved indices: input element (a, b) of one plane sums the gradients of the
// (at most FAN_IN_ROWS x FAN_IN_COLS) windows that hold it and whose saved maximum it is, in the
// same order as max_pool_backward.
inline float max_pool_argmax_gradient_element(
    __global const int *winners, __global const float *gradient, __global const int *row_window,
    __global const int *col_window, int a, int b, int width, int out_width) {
    int mine = a * width + b;
    float sum = 0.0f;
    for (int p = 0; p < FAN_IN_ROWS; ++p) {
        int i = row_window[a * FAN_IN_ROWS + p];
        for (int q = 0; q < FAN_IN_COLS; ++q) {
            int j = col_window[b * FAN_IN_COLS + q];
            int slot = max(i, 0) * out_width + max(j, 0);
            bool won = i >= 0 && j >= 0 && winners[slot] == mine;
            sum += won ? gradient[slot] : 0.0f;
        }
    }
    return sum;
}

// Outputs whose whole window lies inside the input (no clamping), one per work item.
__kernel void max_pool_forward_interior(
    __global const float *x, __global float *y,
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
    float best = window[0];
    for (int u = 0; u < KERNEL_SIZE; ++u) {
        for (int v = 0; v < KERNEL_SIZE; ++v) {
            float candidate = window[u * width + v];
            best = replaces_maximum(candidate, best) ? candidate : best;
        }
    }
    y[plane_offset(plane, i, j, out_height, out_width)] = best;
}

// max_pool_forward_interior with OUTPUTS_PER_ITEM consecutive outputs per work item, STRIDE 2
// only: each tap's samples along W are the even lanes of one wide load (window_vector.h).
// Rows come from the (clamped) row table, so the range may include the border rows and the
// host needs no launch for the top and bottom strips: a clamped row repeats a row of the same
// window, which leaves the maximum unchanged.
__kernel void max_pool_forward_interior_vector(
    __global const float *x, __global float *y, __global const int *row_source,
    __global const int *table_row_source, __global const int *col_source, SIDE_ARGUMENTS,
    int planes, int height, int width, int out_height, int out_width,
    int row_begin, int rows, int col_begin, int cols, int pad_top, int pad_left) {
    int ii = get_global_id(1);
    int plane = get_global_id(2);
    if (ii >= rows || plane >= planes) return;
    COMPUTE_FOLDED_SIDES(
        cols, i, j, y[plane_offset(plane, i, j, out_height, out_width)],
        max_pool_element(x + plane * height * width, table_row_source, col_source, i, j, width))
    if (get_global_id(0) * OUTPUTS_PER_ITEM >= cols) return;
    // The last vector ends at the last column (see LAST_VECTOR_NOTE in window_vector.h).
    int jj = min((int)get_global_id(0) * OUTPUTS_PER_ITEM, cols - OUTPUTS_PER_ITEM);
    int i = row_begin + ii;
    int j = col_begin + jj;
    __global const float *window = x + plane * height * width + (2 * j - pad_left);
    VECTOR best = STRIDED(window + row_source[i * KERNEL_SIZE] * width);
    for (int u = 0; u < KERNEL_SIZE; ++u) {
        __global const float *row = window + row_source[i * KERNEL_SIZE + u] * width;
        for (int v = 0; v < KERNEL_SIZE; ++v) best = VECTOR_MAX(best, STRIDED(row + v));
    }
    VSTORE(best, 0, y + plane_offset(plane, i, j, out_height, out_width));
}

// Any outputs through the tables, work items remapped as in weighted_window_forward
// (blur_pool.cl): index k covers base + k + (k >= split ? jump : 0).
__kernel void max_pool_forward(
    __global const float *x, __global float *y,
    __global const int *row_source, __global const int *col_source,
    int planes, int height, int width, int out_height, int out_width,
    STRIP_PARAMETERS) {
    int i, j, plane;
    if (!strip_position(STRIP_ARGUMENTS, planes, &i, &j, &plane)) return;
    y[plane_offset(plane, i, j, out_height, out_width)] =
        max_pool_element(x + plane * height * width, row_source, col_source, i, j, width);
}

// Training forward over every output: the maximum and the flat index (row * width + col, in its
// plane) of the first maximum, which max_pool_backward_argmax routes the gradient to.
__kernel void max_pool_forward_argmax(
    __global const float *x, __global float *y, __global int *argmax,
    __global const int *row_source, __global const int *col_source,
    int planes, int height, int width, int out_height, int out_width) {
    int j = get_global_id(0);
    int i = get_global_id(1);
    int plane = get_global_id(2);
    if (j >= out_width || i >= out_height || plane >= planes) return;
    __global const float *image = x + plane * height * width;
    int best_index = window_argmax(image, row_source, col_source, i, j, width);
    int out = plane_offset(plane, i, j, out_height, out_width);
    y[out] = image[best_index];
    argmax[out] = best_index;
}

// max_pool_argmax_gradient_element over the columns max_pool_backward_argmax_vector leaves
// (work items remapped as in max_pool_forward), or everything.
__kernel void max_pool_backward_argmax(
    __global const int *argmax, __global const float *grad_y, __global float *grad_x,
    __global const int *row_window, __global const int *col_window,
    int planes, int height, int width, int out_height, int out_width,
    STRIP_PARAMETERS) {
    int a, b, plane;
    if (!strip_position(STRIP_ARGUMENTS, planes, &a, &b, &plane)) return;
    int offset = plane * out_height * out_width;
    grad_x[plane_offset(plane, a, b, height, width)] = max_pool_argmax_gradient_element(
        argmax + offset, grad_y + offset, row_window, col_window, a, b, width, out_width);
}

// max_pool_backward_argmax for 8 consecutive input columns per work item, STRIDE 2, columns
// whose windows are all real outputs (rows still through row_window). The host starts every
// vector at b0 with b0 + pad_left even, so lane 2m + e lies in the windows j = M - t,
// M = (b0 + pad_left) / 2 + m, t = (KERNEL_SIZE - 1 - e) / 2 ... 0 (increasing j, the order of
// the one-element kernel, so the sums are the same bits): contiguous loads of 4 indices and
// gradients for the even lanes and for the odd lanes, interleaved at the end.
__kernel void max_pool_backward_argmax_vector(
    __global const int *argmax, __global const float *grad_y, __global float *grad_x,
    __global const int *row_window,
    __global const int *table_row_window, __global const int *col_window, SIDE_ARGUMENTS,
    int planes, int height, int width, int out_height, int out_width,
    int row_begin, int rows, int col_begin, int cols, int pad_top, int pad_left) {
    int ii = get_global_id(1);
    int plane = get_global_id(2);
    if (ii >= rows || plane >= planes) return;
    if (get_global_id(0) == (cols + 7) / 8) {
        int a = row_begin + ii;
        int offset = plane * out_height * out_width;
        for (int k = 0; k < side_cols; ++k) {
            int b = strip_index(k, 0, side_split, side_jump);
            grad_x[plane_offset(plane, a, b, height, width)] = max_pool_argmax_gradient_element(
                argmax + offset, grad_y + offset, table_row_window, col_window, a, b, width, out_width);
        }
        return;
    }
    if (get_global_id(0) * 8 >= cols) return;
    // The last vector ends at the last column (see LAST_VECTOR_NOTE in window_vector.h).
    int jj = min((int)get_global_id(0) * 8, cols - 8);
    int a = row_begin + ii;
    int b = col_begin + jj;
    int base = plane * out_height * out_width + (b + pad_left) / 2;
    int4 mine_even = (int4)(0, 2, 4, 6) + a * width + b;
    int4 mine_odd = mine_even + 1;
    float4 even = (float4)(0.0f);
    float4 odd = (float4)(0.0f);
    for (int p = 0; p < FAN_IN_ROWS; ++p) {
        int i = row_window[a * FAN_IN_ROWS + p];
        int4 row_valid = (int4)(i >= 0 ? -1 : 0);
        int row = base + max(i, 0) * out_width;
        for (int t = (KERNEL_SIZE - 1) / 2; t >= 0; --t) {
            int4 won = (vload4(0, argmax + row - t) == mine_even) & row_valid;
            even += select((float4)(0.0f), vload4(0, grad_y + row - t), won);
        }
        for (int t = (KERNEL_SIZE - 2) / 2; t >= 0; --t) {
            int4 won = (vload4(0, argmax + row - t) == mine_odd) & row_valid;
            odd += select((float4)(0.0f), vload4(0, grad_y + row - t), won);
        }
    }
    vstore8((float8)(even.s0, odd.s0, even.s1, odd.s1, even.s2, odd.s2, even.s3, odd.s3), 0,
            grad_x + plane_offset(plane, a, b, height, width));
}

__kernel void max_pool_backward(
    __global const float *x, __global const float *grad_y, __global float *grad_x,
    __global const int *row_source, __global const int *col_source,
    __global const int *row_window, __global const int *col_window,
    int planes, int height, int width, int out_height, int out_width) {
    int b = get_global_id(0);
    int a = get_global_id(1);
    int plane = get_global_id(2);
    if (b >= width || a >= height || plane >= planes) return;
    __global const float *image = x + plane * height * width;
    __global const float *gradient = grad_y + plane * out_height * out_width;
    int mine = a * width + b;
    float sum = 0.0f;
    for (int p = 0; p < FAN_IN_ROWS; ++p) {
        int i = row_window[a * FAN_IN_ROWS + p];
        for (int q = 0; q < FAN_IN_COLS; ++q) {
            int j = col_window[b * FAN_IN_COLS + q];
            if (i >= 0 && j >= 0 && window_argmax(image, row_source, col_source, i, j, width) == mine) {
                sum += gradient[i * out_width + j];
            }
        }
    }
    grad_x[plane_offset(plane, a, b, height, width)] = sum;
}
