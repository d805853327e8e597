// Vector helpers of the stride-2 window kernels (blur_pool.cl, max_pool.cl). VECTOR holds
// OUTPUTS_PER_ITEM (2, 4 or 8) consecutive outputs along W; taps are read with one unaligned
// load of twice that width whose even lanes are the samples 2o + v of tap v (PoCL turns these
// into vector loads and shuffles; a gather through a private array would stay scalar).
// HALF is half a vector: the backward kernels compute the even and odd lanes separately
// (they read different taps) and INTERLEAVE them.
//
// LAST_VECTOR_NOTE: global 0 is ceil(cols / lanes) and the last vector is moved left to end at
// the last column, so a range that is not a whole number of vectors needs no scalar columns;
// the overlapped outputs are computed twice from the same inputs by the same code and written
// with the same bits. The host keeps cols >= lanes, and for the backward kernels, whose vectors
// must start on an even padded column, cols - lanes even.
#ifndef NYQUIST_WINDOW_VECTOR_H
#define NYQUIST_WINDOW_VECTOR_H

#if OUTPUTS_PER_ITEM == 2
#define VECTOR float2
#define VSTORE vstore2
#define WIDE_LOAD(pointer) vload4(0, pointer)
#define HALF float
#define HALF_LOAD(pointer) (*(pointer))
#define INTERLEAVE(even, odd) ((float2)((even), (odd)))
#elif OUTPUTS_PER_ITEM == 4
#define VECTOR float4
#define VSTORE vstore4
#define WIDE_LOAD(pointer) vload8(0, pointer)
#define HALF float2
#define HALF_LOAD(pointer) vload2(0, pointer)
#define INTERLEAVE(even, odd) ((float4)((even).s0, (odd).s0, (even).s1, (odd).s1))
#else
// 8, and the default so that every file compiles with any defines (the host launches the
// vector kernels only with 2, 4 or 8).
#define VECTOR float8
#define VSTORE vstore8
#define WIDE_LOAD(pointer) vload16(0, pointer)
#define HALF float4
#define HALF_LOAD(pointer) vload4(0, pointer)
#define INTERLEAVE(even, odd) \
    ((float8)((even).s0, (odd).s0, (even).s1, (odd).s1, (even).s2, (odd).s2, (even).s3, (odd).s3))
#endif

// Samples pointer[2o] for the lanes o of a vector (tap v of the outputs: pass pointer + v).
#define STRIDED(pointer) (WIDE_LOAD(pointer).even)

// Folded side strips. The host may launch one work item more per row than there are vectors:
// that item (IS_SIDE_ITEM) computes the row's left and right border columns through the axis
// tables, right after the row's vectors, while the row is still in cache; a separate launch
// over the strips re-reads most cache lines of a narrow map (each strip row touches its own
// lines) and costs as much as the interior on PoCL. side_cols is the number of such columns,
// remapped as in the strip kernels: column k is k + (k >= side_split ? side_jump : 0). When
// the host launches the strips separately it launches no side item (and passes 0).
#define SIDE_ARGUMENTS int side_cols, int side_split, int side_jump
#define IS_SIDE_ITEM(cols) (get_global_id(0) == ((cols) + OUTPUTS_PER_ITEM - 1) / OUTPUTS_PER_ITEM)

// The side item's whole job, shared by the vector kernels that fold the sides: for row
// `row_begin + ii` of `plane`, each side column (the strip remapping of SIDE_ARGUMENTS) gets
// STORE = ELEMENT, with ROW and COLUMN naming the row and column for both expressions; then
// the item returns. Expects `ii`, `plane`, `row_begin` and the side arguments in scope.
#define COMPUTE_FOLDED_SIDES(cols, ROW, COLUMN, STORE, ELEMENT)           \
    if (IS_SIDE_ITEM(cols)) {                                             \
        int ROW = row_begin + ii;                                         \
        for (int side = 0; side < side_cols; ++side) {                    \
            int COLUMN = strip_index(side, 0, side_split, side_jump);     \
            STORE = ELEMENT;                                              \
        }                                                                 \
        return;                                                           \
    }

// replaces_maximum (common.h) per lane: || and && act per component on vectors.
#define VECTOR_MAX(best, candidate) \
    select((best), (candidate), ((candidate) > (best)) || (isnan(candidate) && !isnan(best)))

#endif
