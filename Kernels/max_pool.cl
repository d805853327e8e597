// Max pooling: window KERNEL_SIZE x KERNEL_SIZE, -inf padding, NaN-propagating, and a backward
// that routes each output gradient to the first maximum (row-major) of its window.
//
// Tables from the host (Sources/Nyquist/AxisTables.swift), per axis:
//   row_source[i * KERNEL_SIZE + u]   input row read by tap u of output row i; padded taps are
//                                     clamped to the nearest row of the same window, which
//                                     cannot change the maximum (padding is at most k/2, so every
//                                     window holds a real row) and never wins a tie before it
//   row_window[a * FAN_IN_ROWS + p]   p-th output row whose window holds input row a (-1: none)
//
// Backward is a gather: each work item owns one input element, re-finds the maximum of every
// window that holds it and adds the gradients of the windows it won. No index tensor is stored
// and no atomics are used, so results are deterministic.
//
// Work-item mapping: global (columns, rows, planes) of the output (forward) / input (backward).
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

__kernel void max_pool_forward(
    __global const float *x, __global float *y,
    __global const int *row_source, __global const int *col_source,
    int planes, int height, int width, int out_height, int out_width) {
    int j = get_global_id(0);
    int i = get_global_id(1);
    int plane = get_global_id(2);
    if (j >= out_width || i >= out_height || plane >= planes) return;
    __global const float *image = x + plane * height * width;
    int cols[KERNEL_SIZE];
    for (int v = 0; v < KERNEL_SIZE; ++v) cols[v] = col_source[j * KERNEL_SIZE + v];
    float best = image[row_source[i * KERNEL_SIZE] * width + cols[0]];
    for (int u = 0; u < KERNEL_SIZE; ++u) {
        __global const float *row = image + row_source[i * KERNEL_SIZE + u] * width;
        for (int v = 0; v < KERNEL_SIZE; ++v) {
            float candidate = row[cols[v]];
            best = replaces_maximum(candidate, best) ? candidate : best;
        }
    }
    y[plane_offset(plane, i, j, out_height, out_width)] = best;
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
