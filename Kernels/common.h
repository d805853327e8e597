// Shared helpers of Nyquist's kernels. The host splices this file in where a kernel file says
// #include "common.h", so every .cl file also lints on its own with
//   clang -x cl -cl-std=CL1.2 -fsyntax-only -I Kernels Kernels/<file>.cl
//
// Layout: tensors are NCHW float; a "plane" is one (n, c) image, planes = N * C. Work items
// always map dimension 0 to the fastest-varying axis (columns) so neighbouring work items touch
// neighbouring addresses (coalesced loads and stores on GPUs).
//
// Padding never appears as a branch in an inner loop: the host precomputes, per axis, which
// input index each tap reads (axis tables, see docs/kernels.md). An index of -1 means "reads the
// constant 0" (zero padding) and is handled with a select, not a branch.
#ifndef NYQUIST_COMMON_H
#define NYQUIST_COMMON_H

// Offset of (row, col) of plane `plane` in a contiguous planes x height x width tensor.
inline int plane_offset(int plane, int row, int col, int height, int width) {
    return (plane * height + row) * width + col;
}

// Reads base[index] when index >= 0 and 0 otherwise, without a branch: the load goes to a safe
// address (index 0) and the result is selected, so an Inf or NaN at the safe address is never
// multiplied into a padded tap.
inline float load_or_zero(__global const float *base, int index) {
    float value = base[max(index, 0)];
    return index >= 0 ? value : 0.0f;
}

// True when `candidate` should replace `best` as the running maximum scanned in row-major order:
// strictly greater, or the first NaN (a NaN anywhere makes the window's maximum NaN, as in
// PyTorch). Ties keep the earlier element, which is what backward routes to.
inline bool replaces_maximum(float candidate, float best) {
    return candidate > best || (isnan(candidate) && !isnan(best));
}

// Border-strip work items are remapped so that one launch covers two strips: item k of an axis
// handles index base + k, skipping `jump` indices once k reaches `split` (the interior between
// the left and right, or top and bottom, strips).
inline int strip_index(int k, int base, int split, int jump) {
    return base + k + (k >= split ? jump : 0);
}

// The remapping arguments of every strip (table) kernel: rows x cols work items per plane.
#define STRIP_PARAMETERS \
    int rows, int row_base, int row_split, int row_jump, int cols, int col_base, int col_split, int col_jump

// Passes a strip kernel's own remapping arguments on.
#define STRIP_ARGUMENTS rows, row_base, row_split, row_jump, cols, col_base, col_split, col_jump

// The element (row, col, plane) a strip kernel's work item owns, remapped by strip_index;
// false when the item lies outside the launch (it then writes nothing).
inline bool strip_position(STRIP_PARAMETERS, int planes, int *row, int *col, int *plane) {
    int column_item = get_global_id(0);
    int row_item = get_global_id(1);
    *plane = get_global_id(2);
    *row = strip_index(row_item, row_base, row_split, row_jump);
    *col = strip_index(column_item, col_base, col_split, col_jump);
    return column_item < cols && row_item < rows && *plane < planes;
}

#endif
