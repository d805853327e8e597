// LiftPool (SPEC.md section 4): one 1-D lifting step along W or H, forward and inverse.
//
// Lifting of a line x of length L (odd L: x is replicate-padded by one sample at the end), band
// length M = ceil(L/2):
//   x_e[m] = x[2m], x_o[m] = x[min(2m+1, L-1)]
//   d = x_o - P(x_e),  s = x_e + U(d)
//   F(v)[m] = tanh(scale[c] * relu(bias[c] + sum_t w[c*K + t] v[m + t - K/2]) + shift[c]),
//   v zero outside 0..M-1 ("same" zero padding).
// Inverse: x_e = s - U(d), x_o = d + P(x_e), interleaved; a padded sample is not written.
//
// Fusion: one work item computes one band position m completely. U(d)[m] needs d on m +- K/2,
// each of those needs P(x_e), i.e. x_e on m +- (K-1): the item evaluates P at K positions
// (K*K taps, all cache hits) instead of writing d and reading it back, so one lifting is one
// global-memory pass that reads x once and writes s and d once. A 2-D LiftDownPool is two
// passes (rows, then both column liftings in one kernel): fusing the rows into the columns would
// recompute the row lifting on (2K-1)-row halos for every output, 2K-1 times the work.
//
// Addressing: element i of line `line` of plane `plane` sits at
//   plane * plane_stride + line * line_stride + i * step
// for the input (x) and for the bands with their own strides, so the same kernel lifts rows
// (step 1) and columns (step = width).
//
// Work-item mapping: global (fast, slow, planes). Rows (along_width = 1): fast = m, slow = line.
// Columns (along_width = 0): fast = line (a column, contiguous in memory), slow = m.
//
// Defines: KERNEL_SIZE (K, odd, 1...7).
#include "common.h"

// No contraction of a * b + c into fma: the RUN lanes must round like RUN = 1 (a compiler may
// contract scalar and vector forms of one expression differently), so that every run length
// gives the same bits.
#pragma OPENCL FP_CONTRACT OFF

#ifndef KERNEL_SIZE
#define KERNEL_SIZE 5
#endif
#define HALF (KERNEL_SIZE / 2)
#ifndef RUN
#define RUN 8
#endif

// Geometry of one lifting pass (kernels take it as 12 int arguments, GEOMETRY_PARAMETERS).
typedef struct {
    int length;        // L
    int band;          // M
    int lines;
    int planes;
    int channels;
    int along_width;
    int in_plane, in_line, in_step;
    int out_plane, out_line, out_step;
} lift_geometry;

// x_e[j] (0 outside 0..M-1).
inline float even_sample(__global const float *line, int j, int length, int band, int step) {
    int i = min(2 * j, length - 1);
    bool inside = j >= 0 && j < band;
    float value = line[(inside ? i : 0) * step];
    return inside ? value : 0.0f;
}

inline float odd_sample(__global const float *line, int j, int length, int step) {
    return line[min(2 * j + 1, length - 1) * step];
}

#define LIFT_PARAMETERS \
    __global const float *pw, __global const float *pb, __global const float *ps, __global const float *pt, \
    __global const float *uw, __global const float *ub, __global const float *us, __global const float *ut

#define LIFT_ARGUMENTS(c) \
    pw + (c) * KERNEL_SIZE, pb[c], ps[c], pt[c], uw + (c) * KERNEL_SIZE, ub[c], us[c], ut[c]
#define LIFT_ARGUMENTS_U(c) uw + (c) * KERNEL_SIZE, ub[c], us[c], ut[c]

// The geometry arguments every kernel takes (the host sets them as 12 ints).
#define GEOMETRY_PARAMETERS \
    int length, int band, int lines, int planes, int channels, int along_width, \
    int in_plane, int in_line, int in_step, int out_plane, int out_line, int out_step
#define GEOMETRY \
    { length, band, lines, planes, channels, along_width, in_plane, in_line, in_step, out_plane, out_line, out_step }

// The names of LIFT_PARAMETERS, for passing them on.
#define LIFT_NAMES pw, pb, ps, pt, uw, ub, us, ut

// Pair kernels (`<kernel>_pair`): one launch runs a step for both column liftings of a 2-D
// layer (LiftUpPool2D: (LL, LH) -> s_h and (HL, HH) -> d_h; LiftDownPool2D's backward: of
// s_h -> (LL, LH) and of d_h -> (HL, HH)), which share the geometry and the parameters. Their
// plane axis is twice the planes: ids below g.planes work on lifting a, the others on lifting
// b, each with its own buffers (suffixes _a and _b, picked by PICK), so each item does exactly
// what the single kernel's item of that plane does, with the same bits, and a launch saved.
#define PAIR_ITEM \
    const int pair_id = get_global_id(2); \
    const bool b = pair_id >= g.planes; \
    const int item = b ? pair_id - g.planes : pair_id
#define PICK(name) (b ? name##_b : name##_a)

// Which run (first band position m0, line, plane) this work item owns in the forward and
// inverse kernels, which compute RUN consecutive band positions each; `item` is its id along the
// plane axis (the plane, but in the pair kernels below).
inline bool lift_run_position(const lift_geometry g, int item, int *m0, int *line, int *plane) {
    int fast = get_global_id(0);
    int slow = get_global_id(1);
    *plane = item;
    *m0 = (g.along_width ? fast : slow) * RUN;
    *line = g.along_width ? slow : fast;
    return *m0 < g.band && *line < g.lines && *plane < g.planes;
}

// ---------------------------------------------------------------------------------------------
// Runs as vectors. A run is RUN consecutive band positions m0 + r, r < RUN, held as one vector
// of RUN lanes (run_vector: float, float2, float4 or float8), so the tanh, the taps and the stores
// work on whole vectors: PoCL does not vectorise a work item's scalar tanh across work items,
// and an explicit float8 tanh is about 10x cheaper per element than the scalar one there
// (docs/kernels.md, LiftPool). On GPUs the lanes are
// simply registers of one work item. No float16: PoCL's x86 builds without AVX-512 warn about
// the ABI of every float16 argument or result (on stderr, at each program build), vload16
// included, and 16 lanes were slower than 8 there anyway (docs/kernels.md, LiftPool).
//
// The inner step (P forward, U inverse) is needed on the run and its K/2 halo each side, RUN +
// 2 (K/2) positions (a "window"): it is evaluated in CHUNKS vectors that start at window offset
// min(c RUN, 2 (K/2)), so the last chunk ends exactly at the window's end (overlapping the one
// before when RUN > 2 (K/2)) and never reads past what the run needs. The window is stored in a
// private array and the outer step reads it back at its K shifts.
//
// A run is "interior" when every sample it reads lies inside its line and the line is
// contiguous (step 1, the passes along W): its loads are then plain (or, for the even and odd
// samples of x, deinterleaving) vector loads. Other runs (line ends, the passes along H, whose
// lines are strided) gather their samples one by one with the border rules above; the
// arithmetic is the same vector code either way. The branch is uniform per work item.
#define CAT_TOKENS(a, b) a##b
#define CAT(a, b) CAT_TOKENS(a, b)
#define WINDOW (RUN + 2 * HALF)
#define CHUNKS ((WINDOW + RUN - 1) / RUN)

#if RUN == 1
typedef float run_vector;
#define LOAD_RUN(p) (*(p))
#define STORE_RUN(v, p) (*(p) = (v))
#else
typedef CAT(float, RUN) run_vector;
#define LOAD_RUN(p) CAT(vload, RUN)(0, p)
#define STORE_RUN(v, p) CAT(vstore, RUN)(v, 0, p)
#endif

// Lane r = p[2r] (p[2r] and p[2r + 1] must both be readable).
#if RUN == 1
#define EVEN_LANES(p) ((p)[0])
#elif RUN == 2
#define EVEN_LANES(p) (vload4(0, p).even)
#elif RUN == 4
#define EVEN_LANES(p) (vload8(0, p).even)
#elif RUN == 8
#define EVEN_LANES(p) ((float8)(vload8(0, p).even, vload8(0, (p) + 8).even))
#else
#error "RUN must be 1, 2, 4 or 8"
#endif

// Stores p[2r] = even lane r, p[2r + 1] = odd lane r.
#if RUN == 1
#define STORE_INTERLEAVED(e, o, p) do { (p)[0] = (e); (p)[1] = (o); } while (0)
#elif RUN == 2
#define STORE_INTERLEAVED(e, o, p) vstore4(((float4)(e, o)).s0213, 0, p)
#elif RUN == 4
#define STORE_INTERLEAVED(e, o, p) vstore8(((float8)(e, o)).s04152637, 0, p)
#else
#define STORE_INTERLEAVED(e, o, p) do { \
        vstore8(((float8)((e).lo, (o).lo)).s04152637, 0, p); \
        vstore8(((float8)((e).hi, (o).hi)).s04152637, 0, (p) + 8); \
    } while (0)
#endif

// ReLU that propagates NaN (fmax(NaN, 0) would give 0), as PyTorch's relu does.
inline run_vector run_relu(run_vector a) {
    return select(fmax(a, 0.0f), a, isnan(a));
}

inline run_vector run_activation(run_vector a, float scale, float shift) {
    return tanh(scale * run_relu(a) + shift);
}

// The window offset where chunk c of the inner step starts.
inline int chunk_start(int c) {
    return min(c * RUN, 2 * HALF);
}

// Whether x_e and x_o on band positions first ... end - 1 can be read with vector loads (each
// position reads the pair x[2j], x[2j + 1], and the odd lanes one float past the last pair).
inline bool x_interior(int first, int end, int length, int step) {
    return step == 1 && first >= 0 && 2 * end + 1 <= length;
}

// Whether band positions first ... end - 1 of a band line can be read with vector loads.
inline bool band_interior(int first, int end, int band, int step) {
    return step == 1 && first >= 0 && end <= band;
}

// How a run's lanes are laid out and read. ALONG: lane r is position m0 + r of one line, read
// as one vector (ALONG_VECTOR, interior runs) or gathered (ALONG_GATHER). ACROSS (the backward
// kernels of the passes along H): lane r is position m0 of line line0 + r, for `lanes` real
// lines; neighbouring lines (columns) are neighbouring floats, so a full run is one vector at
// every position and no load is ever gathered but in the last, partial group of lines.
#define ALONG_GATHER 0
#define ALONG_VECTOR 1
#define ACROSS 2
typedef struct {
    int kind;
    int lanes;
} run_access;

inline run_access along(bool interior) {
    run_access access = {interior ? ALONG_VECTOR : ALONG_GATHER, RUN};
    return access;
}

// The access for band positions first ... end - 1 of a band line (or of x's even and odd
// samples) in a kernel whose lanes are laid out as `layout`.
inline run_access band_access(run_access layout, int first, int end, int band, int step) {
    return layout.kind == ACROSS ? layout : along(band_interior(first, end, band, step));
}

inline run_access x_access(run_access layout, int first, int end, int length, int step) {
    return layout.kind == ACROSS ? layout : along(x_interior(first, end, length, step));
}

// ACROSS: p[offset + r] for the real lanes, 0 elsewhere and everywhere when !inside.
inline run_vector across_run(__global const float *p, bool inside, int offset, int lanes) {
    if (!inside) return 0.0f;
    if (lanes == RUN) return LOAD_RUN(p + offset);
    float values[RUN];
    for (int r = 0; r < RUN; ++r) {
        float value = p[offset + min(r, lanes - 1)];
        values[r] = r < lanes ? value : 0.0f;
    }
    return LOAD_RUN(values);
}

// x_e on j0 ... j0 + RUN - 1 (0 outside the band).
inline run_vector even_run(__global const float *line, int j0, run_access access, int length, int band, int step) {
    if (access.kind == ACROSS) return across_run(line, j0 >= 0 && j0 < band, min(2 * j0, length - 1) * step, access.lanes);
    if (access.kind == ALONG_VECTOR) return EVEN_LANES(line + 2 * j0);
    float lanes[RUN];
    for (int r = 0; r < RUN; ++r) lanes[r] = even_sample(line, j0 + r, length, band, step);
    return LOAD_RUN(lanes);
}

// x_o on j0 ... j0 + RUN - 1 (0 outside the band; the inner step's result there is discarded).
inline run_vector odd_run(__global const float *line, int j0, run_access access, int length, int band, int step) {
    if (access.kind == ACROSS)
        return across_run(line, j0 >= 0 && j0 < band, min(2 * j0 + 1, length - 1) * step, access.lanes);
    if (access.kind == ALONG_VECTOR) return EVEN_LANES(line + 2 * j0 + 1);
    float lanes[RUN];
    for (int r = 0; r < RUN; ++r) {
        int j = j0 + r;
        bool inside = j >= 0 && j < band;
        float value = odd_sample(line, inside ? j : 0, length, step);
        lanes[r] = inside ? value : 0.0f;
    }
    return LOAD_RUN(lanes);
}

// A band line v on j0 ... j0 + RUN - 1 (0 outside the band).
inline run_vector band_run(__global const float *line, int j0, run_access access, int band, int step) {
    if (access.kind == ACROSS) return across_run(line, j0 >= 0 && j0 < band, j0 * step, access.lanes);
    if (access.kind == ALONG_VECTOR) return LOAD_RUN(line + j0);
    float lanes[RUN];
    for (int r = 0; r < RUN; ++r) {
        int j = j0 + r;
        bool inside = j >= 0 && j < band;
        float value = line[(inside ? j : 0) * step];
        lanes[r] = inside ? value : 0.0f;
    }
    return LOAD_RUN(lanes);
}

// Zeroes the window entries of chunk `start` (window offset) whose band position m0 - K/2 +
// offset lies outside the band (only runs at a line end have any).
inline void clear_outside(float *window, int start, int m0, int band) {
    for (int r = 0; r < RUN; ++r) {
        int j = m0 - HALF + start + r;
        if (j < 0 || j >= band) window[start + r] = 0.0f;
    }
}

// s and d on the run m0 ... m0 + RUN - 1 of a line of x (lanes past the band are unspecified).
// d is evaluated once on the window (zero outside the band), then U reads it at its K shifts.
inline void lift_run(__global const float *line, int m0, int length, int band, int step,
                     __global const float *pw, float pb, float ps, float pt,
                     __global const float *uw, float ub, float us, float ut, run_vector *s, run_vector *d) {
    // Every x sample read: x_e on m0 - 2 (K/2) ... m0 + RUN - 1 + 2 (K/2) (two floats each).
    const run_access interior = along(x_interior(m0 - 2 * HALF, m0 + RUN + 2 * HALF, length, step));
    float detail[WINDOW];
    for (int c = 0; c < CHUNKS; ++c) {
        const int start = chunk_start(c);
        const int j0 = m0 - HALF + start;
        run_vector a = pb;
        for (int t = 0; t < KERNEL_SIZE; ++t) a += pw[t] * even_run(line, j0 + t - HALF, interior, length, band, step);
        STORE_RUN(odd_run(line, j0, interior, length, band, step) - run_activation(a, ps, pt), detail + start);
        if (interior.kind == ALONG_GATHER) clear_outside(detail, start, m0, band);
    }
    run_vector a = ub;
    for (int q = 0; q < KERNEL_SIZE; ++q) a += uw[q] * LOAD_RUN(detail + q);
    *s = even_run(line, m0, interior, length, band, step) + run_activation(a, us, ut);
    *d = LOAD_RUN(detail + HALF);
}

// Stores the lanes of `value` that lie inside the band at out[r * step] (ACROSS: at out[r], for
// the real lanes): one vector store when the whole run is inside and contiguous.
inline void store_run(__global float *out, run_vector value, int m0, int band, int step, run_access layout) {
    if (layout.kind == ACROSS ? layout.lanes == RUN : step == 1 && m0 + RUN <= band) {
        STORE_RUN(value, out);
        return;
    }
    float lanes[RUN];
    STORE_RUN(value, lanes);
    if (layout.kind == ACROSS) {
        for (int r = 0; r < layout.lanes; ++r) out[r] = lanes[r];
        return;
    }
    for (int r = 0; r < RUN && m0 + r < band; ++r) out[r * step] = lanes[r];
}

// Stores x[2m] = even and x[2m + 1] = odd for the run's positions m inside the band, into a line
// of length L; a padded sample (2m + 1 = L) is not stored but folded into x[2m] when
// `fold_padded` (the adjoint of the replicate padding), dropped otherwise.
inline void store_pairs(__global float *line, run_vector even, run_vector odd, int m0, int band, int length, int step,
                        bool fold_padded, run_access layout) {
    if (layout.kind == ACROSS) {
        // Lanes are lines: x[2 m0] and x[2 m0 + 1] are one row each.
        bool pair = 2 * m0 + 1 < length;
        store_run(line + 2 * m0 * step, pair || !fold_padded ? even : even + odd, 0, 1, 1, layout);
        if (pair) store_run(line + (2 * m0 + 1) * step, odd, 0, 1, 1, layout);
        return;
    }
    if (step == 1 && 2 * (m0 + RUN) <= length) {
        STORE_INTERLEAVED(even, odd, line + 2 * m0);
        return;
    }
    float even_lanes[RUN], odd_lanes[RUN];
    STORE_RUN(even, even_lanes);
    STORE_RUN(odd, odd_lanes);
    for (int r = 0; r < RUN && m0 + r < band; ++r) {
        int m = m0 + r;
        if (2 * m + 1 < length) {
            line[2 * m * step] = even_lanes[r];
            line[(2 * m + 1) * step] = odd_lanes[r];
        } else {
            line[2 * m * step] = fold_padded ? even_lanes[r] + odd_lanes[r] : even_lanes[r];
        }
    }
}

// One lifting of x into bands s and d; with `sum` != 0 also y = s + d (the 1-D layer's output).
__kernel void lift_down(__global const float *x, __global float *s, __global float *d, __global float *y,
                        int sum, GEOMETRY_PARAMETERS, LIFT_PARAMETERS) {
    const lift_geometry g = GEOMETRY;
    int m0, line, plane;
    if (!lift_run_position(g, get_global_id(2), &m0, &line, &plane)) return;
    int c = plane % g.channels;
    __global const float *source = x + plane * g.in_plane + line * g.in_line;
    run_vector approximation, detail;
    lift_run(source, m0, g.length, g.band, g.in_step, LIFT_ARGUMENTS(c), &approximation, &detail);
    int out = plane * g.out_plane + line * g.out_line + m0 * g.out_step;
    store_run(s + out, approximation, m0, g.band, g.out_step, along(false));
    store_run(d + out, detail, m0, g.band, g.out_step, along(false));
    if (sum) store_run(y + out, approximation + detail, m0, g.band, g.out_step, along(false));
}

// The two column liftings of a 2-D layer in one pass: (s_h, d_h) -> LL, LH, HL, HH and
// y = LL + LH + HL + HH. s_h and d_h share the geometry.
__kernel void lift_down_pair(__global const float *sh, __global const float *dh,
                             __global float *ll, __global float *lh, __global float *hl, __global float *hh,
                             __global float *y, GEOMETRY_PARAMETERS, LIFT_PARAMETERS) {
    const lift_geometry g = GEOMETRY;
    int m0, line, plane;
    if (!lift_run_position(g, get_global_id(2), &m0, &line, &plane)) return;
    int c = plane % g.channels;
    int in = plane * g.in_plane + line * g.in_line;
    run_vector low_s, low_d, high_s, high_d;
    lift_run(sh + in, m0, g.length, g.band, g.in_step, LIFT_ARGUMENTS(c), &low_s, &low_d);
    lift_run(dh + in, m0, g.length, g.band, g.in_step, LIFT_ARGUMENTS(c), &high_s, &high_d);
    int out = plane * g.out_plane + line * g.out_line + m0 * g.out_step;
    store_run(ll + out, low_s, m0, g.band, g.out_step, along(false));
    store_run(lh + out, low_d, m0, g.band, g.out_step, along(false));
    store_run(hl + out, high_s, m0, g.band, g.out_step, along(false));
    store_run(hh + out, high_d, m0, g.band, g.out_step, along(false));
    store_run(y + out, (low_s + low_d) + (high_s + high_d), m0, g.band, g.out_step, along(false));
}

// Inverse lifting: bands s, d (the "input" geometry, length = band = M) to x (the "output"
// geometry, length L); each item reconstructs the run m0 ... m0 + RUN - 1: x[2m] and, when
// 2m+1 < L, x[2m+1]. x_e = s - U(d) is evaluated once on the window (zero outside the band),
// then P reads it at its K shifts. Here g.length is L and g.band is M; in_* address the bands,
// out_* address x.
inline void lift_up_step(__global const float *s, __global const float *d, __global float *x, const lift_geometry g,
                         int item, LIFT_PARAMETERS) {
    int m0, line, plane;
    if (!lift_run_position(g, item, &m0, &line, &plane)) return;
    int c = plane % g.channels;
    int in = plane * g.in_plane + line * g.in_line;
    __global const float *sl = s + in;
    __global const float *dl = d + in;
    const int step = g.in_step;
    // Every band sample read: d on m0 - 2 (K/2) ... m0 + RUN - 1 + 2 (K/2).
    const run_access interior = along(band_interior(m0 - 2 * HALF, m0 + RUN + 2 * HALF, g.band, step));
    float even[WINDOW];
    for (int k = 0; k < CHUNKS; ++k) {
        const int start = chunk_start(k);
        const int j0 = m0 - HALF + start;
        run_vector a = ub[c];
        for (int t = 0; t < KERNEL_SIZE; ++t) a += uw[c * KERNEL_SIZE + t] * band_run(dl, j0 + t - HALF, interior, g.band, step);
        STORE_RUN(band_run(sl, j0, interior, g.band, step) - run_activation(a, us[c], ut[c]), even + start);
        if (interior.kind == ALONG_GATHER) clear_outside(even, start, m0, g.band);
    }
    run_vector a = pb[c];
    for (int q = 0; q < KERNEL_SIZE; ++q) a += pw[c * KERNEL_SIZE + q] * LOAD_RUN(even + q);
    run_vector odd = band_run(dl, m0, interior, g.band, step) + run_activation(a, ps[c], pt[c]);
    __global float *xl = x + plane * g.out_plane + line * g.out_line;
    store_pairs(xl, LOAD_RUN(even + HALF), odd, m0, g.band, g.length, g.out_step, false, along(false));
}

__kernel void lift_up(__global const float *s, __global const float *d, __global float *x, GEOMETRY_PARAMETERS,
                      LIFT_PARAMETERS) {
    const lift_geometry g = GEOMETRY;
    lift_up_step(s, d, x, g, get_global_id(2), LIFT_NAMES);
}

__kernel void lift_up_pair(__global const float *s_a, __global const float *d_a, __global float *x_a,
                           __global const float *s_b, __global const float *d_b, __global float *x_b,
                           GEOMETRY_PARAMETERS, LIFT_PARAMETERS) {
    const lift_geometry g = GEOMETRY;
    PAIR_ITEM;
    lift_up_step(PICK(s), PICK(d), PICK(x), g, item, LIFT_NAMES);
}

// ---------------------------------------------------------------------------------------------
// Training: regularisers and backward of one forward lifting (x -> s, d).
//
// Upstream gradients of a lifting: g_s = [HAS_GS] gs + [HAS_GY] gy, g_d = [HAS_GD] gd + [HAS_GY] gy
// (flags bit 0, 1, 2: the y = sum of bands contributes to every band it sums). The regularisers
// enter as cu_scale = 2 gradLoss lambda_u / E and cp_scale = 2 gradLoss lambda_p / E, E the
// number of band elements of this lifting:
//   gA[j]  = g_s[j] + cu_scale (s[j] - x_o[j])                 (gradient reaching s)
//   gD[m]  = g_d[m] + cp_scale d[m] + U^T(gA)[m]               (lift_backward_detail, written)
//   gx_e   = gA + P^T(-gD),  gx_o = gD - cu_scale (s - x_o)    (lift_backward_input)
// where F^T(g)[m] = sum_t w[t] ga[m - t + K/2], ga[j] = g[j] (1 - F[j]^2) scale [a[j] > 0]
// (relu'(0) = 0). Each F^T needs the gate ga on m +- K/2, so the gates are evaluated once per
// band position and stored (the pre-activation a and gz = g (1 - F^2), from which ga and the
// parameter gradients follow without another tanh) instead of K times per position:
//   lift_backward_update_gate   U's gate from gA                       (a_U, gz_U written)
//   lift_backward_detail        gD from U's gate, then P's gate from gD (gD, a_P, gz_P written)
//   lift_parameter_gradients    from the stored gates
//   lift_backward_input         gx from P's gate
// Four passes per lifting and two tanh per band position (K + K + 2 before).
//
// Parameter gradients (lift_parameter_gradients): one work group of LIFT_GROUP items per
// channel; each item sums its strided share of the channel's runs (RUN positions as one vector,
// lanes past the band contributing 0) in a fixed order, then a local-memory tree reduction; the
// group's item 0 adds the result to the gradient buffers (accumulate = 1 for the second and
// third lifting of a 2-D layer). No atomics, so the result is deterministic. RUN decides which
// lane sums which position, so the host builds these kernels with one RUN whatever the `run`
// knob says (LiftLaunch.reductionRun).
//
// Regularisers (lift_regulariser_partials; lift_regulariser_partials_2d for the three liftings
// of a 2-D layer in one launch): work group g sums (s - x_o)^2 and d^2 over a fixed strided
// share, tree-reduces and writes partials[2g], partials[2g + 1]; the host adds each lifting's
// partials in order (in double).
#ifndef LIFT_GROUP
#define LIFT_GROUP 64
#endif

#define HAS_GS 1
#define HAS_GD 2
#define HAS_GY 4

#define BACKWARD_BUFFERS \
    __global const float *x, __global const float *s, __global const float *d, \
    __global const float *gs, __global const float *gd, __global const float *gy, int flags, \
    float cu_scale, float cp_scale
#define BACKWARD_NAMES x, s, d, gs, gd, gy, flags, cu_scale, cp_scale

// BACKWARD_BUFFERS of the two liftings of a pair kernel: their own bands and upstream gradients,
// the shared gy (the 2-D output sums all four bands) and scales (the liftings have the same
// band element count).
#define PAIR_BACKWARD_BUFFERS \
    __global const float *x_a, __global const float *s_a, __global const float *d_a, \
    __global const float *gs_a, __global const float *gd_a, int flags_a, \
    __global const float *x_b, __global const float *s_b, __global const float *d_b, \
    __global const float *gs_b, __global const float *gd_b, int flags_b, \
    __global const float *gy, float cu_scale, float cp_scale
// BACKWARD_NAMES of lifting `which` (a or b), or of the one PICK chooses.
#define PAIR_BACKWARD_NAMES(which) \
    x_##which, s_##which, d_##which, gs_##which, gd_##which, gy, flags_##which, cu_scale, cp_scale
#define PAIR_BACKWARD_NAMES_PICKED PICK(x), PICK(s), PICK(d), PICK(gs), PICK(gd), gy, PICK(flags), cu_scale, cp_scale

// The per-position backward kernels below work on runs as vectors: along W like the forward
// ones (RUN positions of a line), along H across RUN lines (lift_lane_position). Band lines are
// read with band_run, so a gate outside the band reads as pre = gz = 0 and contributes nothing.

// ga of a stored gate: the gradient reaching the pre-activation (relu'(0) = 0; NaN gives 0, as
// the comparison does in every kernel here).
inline run_vector gate_gradient_run(run_vector pre, run_vector gz, float scale) {
    return select((run_vector)0.0f, gz * scale, pre > 0.0f);
}

// ACROSS for the group of lines that starts at `line`.
inline run_access across(const lift_geometry g, int line) {
    run_access access = {ACROSS, min(RUN, g.lines - line)};
    return access;
}

// Which run (m0, first line, plane) this work item of a per-position backward kernel owns, and
// its lane layout. Along W as lift_run_position (ALONG). Along H the lanes are RUN neighbouring
// lines at one position (ACROSS), global (ceil(lines / RUN), band, planes): the backward steps
// need no window, so nothing is recomputed and every load is one vector.
inline bool lift_lane_position(const lift_geometry g, int item, int *m0, int *line, int *plane, run_access *layout) {
    if (g.along_width) {
        *layout = along(false);
        return lift_run_position(g, item, m0, line, plane);
    }
    *line = get_global_id(0) * RUN;
    *m0 = get_global_id(1);
    *plane = item;
    *layout = across(g, *line);
    return *m0 < g.band && *line < g.lines && *plane < g.planes;
}

// The parameter reductions visit a channel in units laid out as the backward kernels' runs:
// along W a run of RUN positions of one line, along H one position of RUN lines.
inline int units_per_line(const lift_geometry g) {
    return g.along_width ? (g.band + RUN - 1) / RUN : (g.lines + RUN - 1) / RUN;
}

// Lines per plane in the reductions' sense: band positions along H, where a unit spans lines.
inline int lines_per_plane(const lift_geometry g) {
    return g.along_width ? g.lines : g.band;
}

inline int reduction_units(const lift_geometry g) {
    return (g.planes / g.channels) * lines_per_plane(g) * units_per_line(g);
}

// Unit e of channel c: its first lane (m0, line), its plane and its layout.
inline run_access reduction_unit(const lift_geometry g, int c, int e, int *m0, int *line, int *plane) {
    int units = units_per_line(g);
    int lines = lines_per_plane(g);
    int unit = e % units;
    int rest = e / units;
    int outer = rest % lines;
    *plane = (rest / lines) * g.channels + c;
    *m0 = g.along_width ? unit * RUN : outer;
    *line = g.along_width ? outer : unit * RUN;
    return g.along_width ? along(false) : across(g, *line);
}

// The upstream gradient of a band (own: HAS_GS or HAS_GD) on a run, with gy's share.
inline run_vector upstream_run(__global const float *g, __global const float *gy, int flags, int own, int base,
                               int m0, run_access interior, int band, int step) {
    run_vector value = 0.0f;
    if (flags & own) value = band_run(g + base, m0, interior, band, step);
    if (flags & HAS_GY) value += band_run(gy + base, m0, interior, band, step);
    return value;
}

// sum_t w[t] ga(m - t + K/2) on a run: the transposed step F^T of a stored gate.
inline run_vector transposed_step(__global const float *pre, __global const float *gz, int m0, run_access interior,
                                  int band, int step, __global const float *w, float scale) {
    run_vector total = 0.0f;
    for (int t = 0; t < KERNEL_SIZE; ++t) {
        int j0 = m0 - t + HALF;
        total += w[t] * gate_gradient_run(band_run(pre, j0, interior, band, step), band_run(gz, j0, interior, band, step), scale);
    }
    return total;
}

inline void backward_update_gate_step(BACKWARD_BUFFERS, __global float *update_pre_out, __global float *update_gz,
                                      const lift_geometry g, int item, LIFT_PARAMETERS) {
    int m0, line, plane;
    run_access layout;
    if (!lift_lane_position(g, item, &m0, &line, &plane, &layout)) return;
    int c = plane % g.channels;
    __global const float *xl = x + plane * g.in_plane + line * g.in_line;
    int base = plane * g.out_plane + line * g.out_line;
    int os = g.out_step;
    const run_access halo = band_access(layout, m0 - HALF, m0 + RUN + HALF, g.band, os);
    const run_access own = band_access(layout, m0, m0 + RUN, g.band, os);
    run_vector a = ub[c];
    for (int t = 0; t < KERNEL_SIZE; ++t) a += uw[c * KERNEL_SIZE + t] * band_run(d + base, m0 + t - HALF, halo, g.band, os);
    run_vector u = run_activation(a, us[c], ut[c]);
    run_vector odd = odd_run(xl, m0, x_access(layout, m0, m0 + RUN, g.length, g.in_step), g.length, g.band, g.in_step);
    run_vector gradient = upstream_run(gs, gy, flags, HAS_GS, base, m0, own, g.band, os)
        + cu_scale * (band_run(s + base, m0, own, g.band, os) - odd);
    store_run(update_pre_out + base + m0 * os, a, m0, g.band, os, layout);
    store_run(update_gz + base + m0 * os, gradient * (1.0f - u * u), m0, g.band, os, layout);
}

__kernel void lift_backward_update_gate(BACKWARD_BUFFERS, __global float *update_pre_out, __global float *update_gz,
                                        GEOMETRY_PARAMETERS, LIFT_PARAMETERS) {
    const lift_geometry g = GEOMETRY;
    backward_update_gate_step(BACKWARD_NAMES, update_pre_out, update_gz, g, get_global_id(2), LIFT_NAMES);
}

__kernel void lift_backward_update_gate_pair(PAIR_BACKWARD_BUFFERS, __global float *update_pre_out_a,
                                             __global float *update_gz_a, __global float *update_pre_out_b,
                                             __global float *update_gz_b, GEOMETRY_PARAMETERS, LIFT_PARAMETERS) {
    const lift_geometry g = GEOMETRY;
    PAIR_ITEM;
    backward_update_gate_step(PAIR_BACKWARD_NAMES_PICKED, PICK(update_pre_out), PICK(update_gz), g, item, LIFT_NAMES);
}

inline void backward_detail_step(BACKWARD_BUFFERS, __global const float *update_pre_in,
                                 __global const float *update_gz, __global float *gdetail,
                                 __global float *predict_pre_out, __global float *predict_gz, const lift_geometry g,
                                 int item, LIFT_PARAMETERS) {
    int m0, line, plane;
    run_access layout;
    if (!lift_lane_position(g, item, &m0, &line, &plane, &layout)) return;
    int c = plane % g.channels;
    __global const float *xl = x + plane * g.in_plane + line * g.in_line;
    int base = plane * g.out_plane + line * g.out_line;
    int os = g.out_step;
    const run_access halo = band_access(layout, m0 - HALF, m0 + RUN + HALF, g.band, os);
    const run_access own = band_access(layout, m0, m0 + RUN, g.band, os);
    run_vector total = upstream_run(gd, gy, flags, HAS_GD, base, m0, own, g.band, os)
        + cp_scale * band_run(d + base, m0, own, g.band, os)
        + transposed_step(update_pre_in + base, update_gz + base, m0, halo, g.band, os, uw + c * KERNEL_SIZE, us[c]);
    store_run(gdetail + base + m0 * os, total, m0, g.band, os, layout);
    // P's output at m receives -gD[m].
    const run_access x_halo = x_access(layout, m0 - HALF, m0 + RUN + HALF, g.length, g.in_step);
    run_vector a = pb[c];
    for (int t = 0; t < KERNEL_SIZE; ++t)
        a += pw[c * KERNEL_SIZE + t] * even_run(xl, m0 + t - HALF, x_halo, g.length, g.band, g.in_step);
    run_vector p = run_activation(a, ps[c], pt[c]);
    store_run(predict_pre_out + base + m0 * os, a, m0, g.band, os, layout);
    store_run(predict_gz + base + m0 * os, -total * (1.0f - p * p), m0, g.band, os, layout);
}

__kernel void lift_backward_detail(BACKWARD_BUFFERS, __global const float *update_pre_in,
                                   __global const float *update_gz, __global float *gdetail,
                                   __global float *predict_pre_out, __global float *predict_gz, GEOMETRY_PARAMETERS,
                                   LIFT_PARAMETERS) {
    const lift_geometry g = GEOMETRY;
    backward_detail_step(BACKWARD_NAMES, update_pre_in, update_gz, gdetail, predict_pre_out, predict_gz, g,
        get_global_id(2), LIFT_NAMES);
}

__kernel void lift_backward_detail_pair(PAIR_BACKWARD_BUFFERS, __global const float *update_pre_in_a,
                                        __global const float *update_gz_a, __global float *gdetail_a,
                                        __global float *predict_pre_out_a, __global float *predict_gz_a,
                                        __global const float *update_pre_in_b, __global const float *update_gz_b,
                                        __global float *gdetail_b, __global float *predict_pre_out_b,
                                        __global float *predict_gz_b, GEOMETRY_PARAMETERS, LIFT_PARAMETERS) {
    const lift_geometry g = GEOMETRY;
    PAIR_ITEM;
    backward_detail_step(PAIR_BACKWARD_NAMES_PICKED, PICK(update_pre_in), PICK(update_gz), PICK(gdetail),
        PICK(predict_pre_out), PICK(predict_gz), g, item, LIFT_NAMES);
}

inline void backward_input_step(BACKWARD_BUFFERS, __global const float *predict_pre_in,
                                __global const float *predict_gz, __global const float *gdetail, __global float *gx,
                                const lift_geometry g, int item, LIFT_PARAMETERS) {
    int m0, line, plane;
    run_access layout;
    if (!lift_lane_position(g, item, &m0, &line, &plane, &layout)) return;
    int c = plane % g.channels;
    int in = plane * g.in_plane + line * g.in_line;
    __global const float *xl = x + in;
    int base = plane * g.out_plane + line * g.out_line;
    int os = g.out_step;
    int is = g.in_step;
    const run_access halo = band_access(layout, m0 - HALF, m0 + RUN + HALF, g.band, os);
    const run_access own = band_access(layout, m0, m0 + RUN, g.band, os);
    run_vector odd_x = odd_run(xl, m0, x_access(layout, m0, m0 + RUN, g.length, is), g.length, g.band, is);
    run_vector residual = band_run(s + base, m0, own, g.band, os) - odd_x;
    run_vector even = upstream_run(gs, gy, flags, HAS_GS, base, m0, own, g.band, os) + cu_scale * residual
        + transposed_step(predict_pre_in + base, predict_gz + base, m0, halo, g.band, os, pw + c * KERNEL_SIZE, ps[c]);
    run_vector odd = band_run(gdetail + base, m0, own, g.band, os) - cu_scale * residual;
    store_pairs(gx + in, even, odd, m0, g.band, g.length, is, true, layout);
}

__kernel void lift_backward_input(BACKWARD_BUFFERS, __global const float *predict_pre_in,
                                  __global const float *predict_gz, __global const float *gdetail, __global float *gx,
                                  GEOMETRY_PARAMETERS, LIFT_PARAMETERS) {
    const lift_geometry g = GEOMETRY;
    backward_input_step(BACKWARD_NAMES, predict_pre_in, predict_gz, gdetail, gx, g, get_global_id(2), LIFT_NAMES);
}

__kernel void lift_backward_input_pair(PAIR_BACKWARD_BUFFERS, __global const float *predict_pre_in_a,
                                       __global const float *predict_gz_a, __global const float *gdetail_a,
                                       __global float *gx_a, __global const float *predict_pre_in_b,
                                       __global const float *predict_gz_b, __global const float *gdetail_b,
                                       __global float *gx_b, GEOMETRY_PARAMETERS, LIFT_PARAMETERS) {
    const lift_geometry g = GEOMETRY;
    PAIR_ITEM;
    backward_input_step(PAIR_BACKWARD_NAMES_PICKED, PICK(predict_pre_in), PICK(predict_gz), PICK(gdetail), PICK(gx), g,
        item, LIFT_NAMES);
}

// Sums values[0..LIFT_GROUP) of local memory into values[0].
inline void group_sum(__local float *values, int lid) {
    for (int span = LIFT_GROUP / 2; span > 0; span /= 2) {
        barrier(CLK_LOCAL_MEM_FENCE);
        if (lid < span) values[lid] += values[lid + span];
    }
    barrier(CLK_LOCAL_MEM_FENCE);
}

#define GRADIENT_SLOTS (2 * (KERNEL_SIZE + 3))

// Adds each slot's lanes, in lane order, before the work-group reduction: only scalars stay live
// across its barriers (PoCL keeps every live private value of every work item in memory across
// a barrier; the vectors made the reduction 2-4x slower on small maps).
inline void lane_totals(const run_vector *sums, float *totals) {
    for (int k = 0; k < GRADIENT_SLOTS; ++k) {
        float lanes[RUN];
        STORE_RUN(sums[k], lanes);
        float total = 0.0f;
        for (int r = 0; r < RUN; ++r) total += lanes[r];
        totals[k] = total;
    }
}

/* Sums each of the GRADIENT_SLOTS per-item partial sums over the work-group and adds (or, when
   !accumulate, writes) it to its parameter gradient of channel c: slots 0..K-1 predict weights,
   then predict bias, scale, shift, then the same four for update. Every work item must call it
   (it holds barriers). */
static void store_parameter_gradients(
    const float *sums, __local float *scratch, int lid, int c, int accumulate, __global float *gpw, __global float *gpb,
    __global float *gps, __global float *gpt, __global float *guw, __global float *gub, __global float *gus,
    __global float *gut) {
    for (int k = 0; k < GRADIENT_SLOTS; ++k) {
        scratch[lid] = sums[k];
        group_sum(scratch, lid);
        if (lid == 0) {
            float value = scratch[0];
            __global float *target;
            int index = c;
            if (k < KERNEL_SIZE) { target = gpw; index = c * KERNEL_SIZE + k; }
            else if (k == KERNEL_SIZE) target = gpb;
            else if (k == KERNEL_SIZE + 1) target = gps;
            else if (k == KERNEL_SIZE + 2) target = gpt;
            else if (k < 2 * KERNEL_SIZE + 3) { target = guw; index = c * KERNEL_SIZE + k - (KERNEL_SIZE + 3); }
            else if (k == 2 * KERNEL_SIZE + 3) target = gub;
            else if (k == 2 * KERNEL_SIZE + 4) target = gus;
            else target = gut;
            target[index] = (accumulate ? target[index] : 0.0f) + value;
        }
        barrier(CLK_LOCAL_MEM_FENCE);
    }
}

// Global size (LIFT_GROUP * channels), local LIFT_GROUP: group = channel.
// Slots: P weight[K], P bias, P scale, P shift, then the same for U.
inline void parameter_gradients_step(BACKWARD_BUFFERS, __global const float *update_pre_in,
                                     __global const float *update_gz, __global const float *predict_pre_in,
                                     __global const float *predict_gz, __global float *gpw, __global float *gpb,
                                     __global float *gps, __global float *gpt, __global float *guw,
                                     __global float *gub, __global float *gus, __global float *gut, int accumulate,
                                     const lift_geometry g, __local float *scratch, LIFT_PARAMETERS) {
    int c = get_group_id(0);
    int lid = get_local_id(0);
    run_vector sums[GRADIENT_SLOTS];
    for (int k = 0; k < GRADIENT_SLOTS; ++k) sums[k] = 0.0f;
    int total = reduction_units(g);
    int os = g.out_step;
    int is = g.in_step;
    for (int e = lid; e < total; e += LIFT_GROUP) {
        int m0, line, plane;
        const run_access layout = reduction_unit(g, c, e, &m0, &line, &plane);
        __global const float *xl = x + plane * g.in_plane + line * g.in_line;
        int base = plane * g.out_plane + line * g.out_line;
        const run_access own = band_access(layout, m0, m0 + RUN, g.band, os);
        const run_access halo = band_access(layout, m0 - HALF, m0 + RUN + HALF, g.band, os);
        // U at m: its output receives gA[m]. Lanes past the band read pre = gz = 0: no share.
        run_vector au = band_run(update_pre_in + base, m0, own, g.band, os);
        run_vector gz = band_run(update_gz + base, m0, own, g.band, os);
        run_vector ga = gate_gradient_run(au, gz, us[c]);
        for (int t = 0; t < KERNEL_SIZE; ++t) sums[KERNEL_SIZE + 3 + t] += ga * band_run(d + base, m0 + t - HALF, halo, g.band, os);
        sums[2 * KERNEL_SIZE + 3] += ga;
        sums[2 * KERNEL_SIZE + 4] += gz * run_relu(au);
        sums[2 * KERNEL_SIZE + 5] += gz;
        // P at m: its output receives -gD[m].
        run_vector ap = band_run(predict_pre_in + base, m0, own, g.band, os);
        run_vector gzp = band_run(predict_gz + base, m0, own, g.band, os);
        run_vector gap = gate_gradient_run(ap, gzp, ps[c]);
        const run_access x_halo = x_access(layout, m0 - HALF, m0 + RUN + HALF, g.length, is);
        for (int t = 0; t < KERNEL_SIZE; ++t) sums[t] += gap * even_run(xl, m0 + t - HALF, x_halo, g.length, g.band, is);
        sums[KERNEL_SIZE] += gap;
        sums[KERNEL_SIZE + 1] += gzp * run_relu(ap);
        sums[KERNEL_SIZE + 2] += gzp;
    }
    float totals[GRADIENT_SLOTS];
    lane_totals(sums, totals);
    store_parameter_gradients(totals, scratch, lid, c, accumulate, gpw, gpb, gps, gpt, guw, gub, gus, gut);
}

__kernel void lift_parameter_gradients(BACKWARD_BUFFERS, __global const float *update_pre_in,
                                       __global const float *update_gz, __global const float *predict_pre_in,
                                       __global const float *predict_gz, __global float *gpw, __global float *gpb,
                                       __global float *gps, __global float *gpt, __global float *guw,
                                       __global float *gub, __global float *gus, __global float *gut, int accumulate,
                                       GEOMETRY_PARAMETERS, LIFT_PARAMETERS) {
    const lift_geometry g = GEOMETRY;
    __local float scratch[LIFT_GROUP];
    parameter_gradients_step(BACKWARD_NAMES, update_pre_in, update_gz, predict_pre_in, predict_gz, gpw, gpb, gps, gpt,
        guw, gub, gus, gut, accumulate, g, scratch, LIFT_NAMES);
}

// Both column liftings' parameter gradients: each channel's group reduces lifting a and writes
// (or adds) its sums, then reduces lifting b and adds: the order of two launches, one launch.
__kernel void lift_parameter_gradients_pair(PAIR_BACKWARD_BUFFERS, __global const float *update_pre_in_a,
                                            __global const float *update_gz_a, __global const float *predict_pre_in_a,
                                            __global const float *predict_gz_a, __global const float *update_pre_in_b,
                                            __global const float *update_gz_b, __global const float *predict_pre_in_b,
                                            __global const float *predict_gz_b, __global float *gpw,
                                            __global float *gpb, __global float *gps, __global float *gpt,
                                            __global float *guw, __global float *gub, __global float *gus,
                                            __global float *gut, int accumulate, GEOMETRY_PARAMETERS,
                                            LIFT_PARAMETERS) {
    const lift_geometry g = GEOMETRY;
    __local float scratch[LIFT_GROUP];
    parameter_gradients_step(PAIR_BACKWARD_NAMES(a), update_pre_in_a, update_gz_a, predict_pre_in_a, predict_gz_a, gpw,
        gpb, gps, gpt, guw, gub, gus, gut, accumulate, g, scratch, LIFT_NAMES);
    parameter_gradients_step(PAIR_BACKWARD_NAMES(b), update_pre_in_b, update_gz_b, predict_pre_in_b, predict_gz_b, gpw,
        gpb, gps, gpt, guw, gub, gus, gut, 1, g, scratch, LIFT_NAMES);
}

// Work group `group` of `groups` sums (s - x_o)^2 and d^2 over its strided share of one
// lifting's band elements (element group * LIFT_GROUP + lid, then every groups * LIFT_GROUP),
// tree-reduces them and writes partials[0] and partials[1].
inline void regulariser_partials_step(__global const float *x, __global const float *s, __global const float *d,
                                      __global float *partials, const lift_geometry g, int group, int groups,
                                      __local float *scratch) {
    int lid = get_local_id(0);
    int total = g.planes * g.lines * g.band;
    float cu = 0.0f;
    float cp = 0.0f;
    for (int e = group * LIFT_GROUP + lid; e < total; e += groups * LIFT_GROUP) {
        int m = e % g.band;
        int rest = e / g.band;
        int line = rest % g.lines;
        int plane = rest / g.lines;
        int index = plane * g.out_plane + line * g.out_line + m * g.out_step;
        float residual = s[index] - odd_sample(x + plane * g.in_plane + line * g.in_line, m, g.length, g.in_step);
        float detail = d[index];
        cu += residual * residual;
        cp += detail * detail;
    }
    scratch[lid] = cu;
    group_sum(scratch, lid);
    if (lid == 0) partials[0] = scratch[0];
    scratch[lid] = cp;
    group_sum(scratch, lid);
    if (lid == 0) partials[1] = scratch[0];
}

// Global size (LIFT_GROUP * groups), local LIFT_GROUP; partials has 2 * groups floats.
__kernel void lift_regulariser_partials(__global const float *x, __global const float *s, __global const float *d,
                                        __global float *partials, GEOMETRY_PARAMETERS) {
    const lift_geometry g = GEOMETRY;
    __local float scratch[LIFT_GROUP];
    int group = get_group_id(0);
    regulariser_partials_step(x, s, d, partials + 2 * group, g, group, get_num_groups(0), scratch);
}

// GEOMETRY_PARAMETERS and GEOMETRY with the names prefixed, for a kernel that takes two.
#define PREFIXED_GEOMETRY_PARAMETERS(p) \
    int p##length, int p##band, int p##lines, int p##planes, int p##channels, int p##along_width, \
    int p##in_plane, int p##in_line, int p##in_step, int p##out_plane, int p##out_line, int p##out_step
#define PREFIXED_GEOMETRY(p) \
    { p##length, p##band, p##lines, p##planes, p##channels, p##along_width, \
      p##in_plane, p##in_line, p##in_step, p##out_plane, p##out_line, p##out_step }

// The three liftings of a 2-D LiftDownPool in one launch: groups 0 ... row_groups - 1 reduce
// the row lifting (x -> s_h, d_h; geometry row_*), the next column_groups the column lifting of
// s_h (-> LL, LH; column_*), the last column_groups that of d_h (-> HL, HH). Each group sums
// what lift_regulariser_partials' group of the same number does for its lifting alone, so the
// partials have the same bits; group k writes partials[2k], partials[2k + 1].
__kernel void lift_regulariser_partials_2d(__global const float *x, __global const float *sh, __global const float *dh,
                                           __global const float *ll, __global const float *lh,
                                           __global const float *hl, __global const float *hh,
                                           __global float *partials, int row_groups, int column_groups,
                                           PREFIXED_GEOMETRY_PARAMETERS(row_),
                                           PREFIXED_GEOMETRY_PARAMETERS(column_)) {
    __local float scratch[LIFT_GROUP];
    const int group = get_group_id(0);
    if (group < row_groups) {
        const lift_geometry rows = PREFIXED_GEOMETRY(row_);
        regulariser_partials_step(x, sh, dh, partials + 2 * group, rows, group, row_groups, scratch);
        return;
    }
    // Uniform per work group, so every item of a group meets the same barriers.
    const lift_geometry columns = PREFIXED_GEOMETRY(column_);
    const int column = group - row_groups;
    const bool high = column >= column_groups;
    regulariser_partials_step(high ? dh : sh, high ? hl : ll, high ? hh : lh, partials + 2 * group, columns,
                              high ? column - column_groups : column, column_groups, scratch);
}

// ---------------------------------------------------------------------------------------------
// Backward of the inverse lifting (LiftUpPool): x_e = s - U(d), x_o = d + P(x_e), x interleaved.
// These kernels take the inverse geometry (in_* address the bands, out_* address x). As in the
// forward lifting's backward, each gate (pre-activation a and gz = g (1 - F^2)) is evaluated
// once per band position and stored, not K times:
//   lift_up_even:            x_e = s - U(d), written once (P needs it on m +- K/2), and a_U
//   lift_up_predict_gate:    P's gate from gx_o                     (a_P, gz_P written)
//   lift_up_backward_even:   gs = gx_e + P^T(gx_o) (gx_o = 0 for a dropped padded sample), then
//                            U's gate from -gs                       (gz_U written)
//   lift_up_backward_detail: gd = gx_o + U^T(-gs)
//   lift_up_parameter_gradients: per channel group from the stored gates, as
//                            lift_parameter_gradients.
// Three tanh per band position (2K + 3 before).

// gx_o on a run: gx[2m + 1], 0 where 2m + 1 = L (a dropped padded sample) or outside the band.
inline run_vector odd_gradient_run(__global const float *gxl, int m0, run_access layout, int length, int band, int step) {
    if (layout.kind == ACROSS) return across_run(gxl, m0 < band && 2 * m0 + 1 < length, (2 * m0 + 1) * step, layout.lanes);
    if (x_interior(m0, m0 + RUN, length, step)) return EVEN_LANES(gxl + 2 * m0 + 1);
    float lanes[RUN];
    for (int r = 0; r < RUN; ++r) {
        int j = m0 + r;
        bool inside = j < band && 2 * j + 1 < length;
        float value = gxl[(inside ? 2 * j + 1 : 0) * step];
        lanes[r] = inside ? value : 0.0f;
    }
    return LOAD_RUN(lanes);
}

inline void up_even_step(__global const float *s, __global const float *d, __global float *even,
                         __global float *update_pre_out, const lift_geometry g, int item, LIFT_PARAMETERS) {
    int m0, line, plane;
    run_access layout;
    if (!lift_lane_position(g, item, &m0, &line, &plane, &layout)) return;
    int c = plane % g.channels;
    int base = plane * g.in_plane + line * g.in_line;
    int is = g.in_step;
    const run_access halo = band_access(layout, m0 - HALF, m0 + RUN + HALF, g.band, is);
    const run_access own = band_access(layout, m0, m0 + RUN, g.band, is);
    run_vector a = ub[c];
    for (int t = 0; t < KERNEL_SIZE; ++t) a += uw[c * KERNEL_SIZE + t] * band_run(d + base, m0 + t - HALF, halo, g.band, is);
    store_run(update_pre_out + base + m0 * is, a, m0, g.band, is, layout);
    store_run(even + base + m0 * is, band_run(s + base, m0, own, g.band, is) - run_activation(a, us[c], ut[c]), m0,
              g.band, is, layout);
}

__kernel void lift_up_even(__global const float *s, __global const float *d, __global float *even,
                           __global float *update_pre_out, GEOMETRY_PARAMETERS, LIFT_PARAMETERS) {
    const lift_geometry g = GEOMETRY;
    up_even_step(s, d, even, update_pre_out, g, get_global_id(2), LIFT_NAMES);
}

__kernel void lift_up_even_pair(__global const float *s_a, __global const float *d_a, __global float *even_a,
                                __global float *update_pre_out_a, __global const float *s_b,
                                __global const float *d_b, __global float *even_b, __global float *update_pre_out_b,
                                GEOMETRY_PARAMETERS, LIFT_PARAMETERS) {
    const lift_geometry g = GEOMETRY;
    PAIR_ITEM;
    up_even_step(PICK(s), PICK(d), PICK(even), PICK(update_pre_out), g, item, LIFT_NAMES);
}

inline void up_predict_gate_step(__global const float *even, __global const float *gx,
                                 __global float *predict_pre_out, __global float *predict_gz, const lift_geometry g,
                                 int item, LIFT_PARAMETERS) {
    int m0, line, plane;
    run_access layout;
    if (!lift_lane_position(g, item, &m0, &line, &plane, &layout)) return;
    int c = plane % g.channels;
    int base = plane * g.in_plane + line * g.in_line;
    int is = g.in_step;
    __global const float *gxl = gx + plane * g.out_plane + line * g.out_line;
    // P reads x_e through the same zero-padded band access as U reads d.
    const run_access halo = band_access(layout, m0 - HALF, m0 + RUN + HALF, g.band, is);
    run_vector a = pb[c];
    for (int t = 0; t < KERNEL_SIZE; ++t)
        a += pw[c * KERNEL_SIZE + t] * band_run(even + base, m0 + t - HALF, halo, g.band, is);
    run_vector p = run_activation(a, ps[c], pt[c]);
    store_run(predict_pre_out + base + m0 * is, a, m0, g.band, is, layout);
    store_run(predict_gz + base + m0 * is, odd_gradient_run(gxl, m0, layout, g.length, g.band, g.out_step) * (1.0f - p * p), m0,
              g.band, is, layout);
}

__kernel void lift_up_predict_gate(__global const float *even, __global const float *gx,
                                   __global float *predict_pre_out, __global float *predict_gz, GEOMETRY_PARAMETERS,
                                   LIFT_PARAMETERS) {
    const lift_geometry g = GEOMETRY;
    up_predict_gate_step(even, gx, predict_pre_out, predict_gz, g, get_global_id(2), LIFT_NAMES);
}

__kernel void lift_up_predict_gate_pair(__global const float *even_a, __global const float *gx_a,
                                        __global float *predict_pre_out_a, __global float *predict_gz_a,
                                        __global const float *even_b, __global const float *gx_b,
                                        __global float *predict_pre_out_b, __global float *predict_gz_b,
                                        GEOMETRY_PARAMETERS, LIFT_PARAMETERS) {
    const lift_geometry g = GEOMETRY;
    PAIR_ITEM;
    up_predict_gate_step(PICK(even), PICK(gx), PICK(predict_pre_out), PICK(predict_gz), g, item, LIFT_NAMES);
}

inline void up_backward_even_step(__global const float *predict_pre_in, __global const float *predict_gz,
                                  __global const float *update_pre_in, __global const float *gx, __global float *gs,
                                  __global float *update_gz, const lift_geometry g, int item, LIFT_PARAMETERS) {
    int m0, line, plane;
    run_access layout;
    if (!lift_lane_position(g, item, &m0, &line, &plane, &layout)) return;
    int c = plane % g.channels;
    int base = plane * g.in_plane + line * g.in_line;
    int is = g.in_step;
    __global const float *gxl = gx + plane * g.out_plane + line * g.out_line;
    const run_access halo = band_access(layout, m0 - HALF, m0 + RUN + HALF, g.band, is);
    const run_access own = band_access(layout, m0, m0 + RUN, g.band, is);
    run_vector gx_even = even_run(gxl, m0, x_access(layout, m0, m0 + RUN, g.length, g.out_step), g.length, g.band, g.out_step);
    run_vector total =
        gx_even + transposed_step(predict_pre_in + base, predict_gz + base, m0, halo, g.band, is, pw + c * KERNEL_SIZE, ps[c]);
    store_run(gs + base + m0 * is, total, m0, g.band, is, layout);
    // U's output at m receives -gs[m].
    run_vector u = run_activation(band_run(update_pre_in + base, m0, own, g.band, is), us[c], ut[c]);
    store_run(update_gz + base + m0 * is, -total * (1.0f - u * u), m0, g.band, is, layout);
}

__kernel void lift_up_backward_even(__global const float *predict_pre_in, __global const float *predict_gz,
                                    __global const float *update_pre_in, __global const float *gx, __global float *gs,
                                    __global float *update_gz, GEOMETRY_PARAMETERS, LIFT_PARAMETERS) {
    const lift_geometry g = GEOMETRY;
    up_backward_even_step(predict_pre_in, predict_gz, update_pre_in, gx, gs, update_gz, g, get_global_id(2), LIFT_NAMES);
}

__kernel void lift_up_backward_even_pair(__global const float *predict_pre_in_a, __global const float *predict_gz_a,
                                         __global const float *update_pre_in_a, __global const float *gx_a,
                                         __global float *gs_a, __global float *update_gz_a,
                                         __global const float *predict_pre_in_b, __global const float *predict_gz_b,
                                         __global const float *update_pre_in_b, __global const float *gx_b,
                                         __global float *gs_b, __global float *update_gz_b, GEOMETRY_PARAMETERS,
                                         LIFT_PARAMETERS) {
    const lift_geometry g = GEOMETRY;
    PAIR_ITEM;
    up_backward_even_step(PICK(predict_pre_in), PICK(predict_gz), PICK(update_pre_in), PICK(gx), PICK(gs),
        PICK(update_gz), g, item, LIFT_NAMES);
}

inline void up_backward_detail_step(__global const float *update_pre_in, __global const float *update_gz,
                                    __global const float *gx, __global float *gd, const lift_geometry g, int item,
                                    LIFT_PARAMETERS) {
    int m0, line, plane;
    run_access layout;
    if (!lift_lane_position(g, item, &m0, &line, &plane, &layout)) return;
    int c = plane % g.channels;
    int base = plane * g.in_plane + line * g.in_line;
    int is = g.in_step;
    __global const float *gxl = gx + plane * g.out_plane + line * g.out_line;
    const run_access halo = band_access(layout, m0 - HALF, m0 + RUN + HALF, g.band, is);
    run_vector total = odd_gradient_run(gxl, m0, layout, g.length, g.band, g.out_step)
        + transposed_step(update_pre_in + base, update_gz + base, m0, halo, g.band, is, uw + c * KERNEL_SIZE, us[c]);
    store_run(gd + base + m0 * is, total, m0, g.band, is, layout);
}

__kernel void lift_up_backward_detail(__global const float *update_pre_in, __global const float *update_gz,
                                      __global const float *gx, __global float *gd, GEOMETRY_PARAMETERS,
                                      LIFT_PARAMETERS) {
    const lift_geometry g = GEOMETRY;
    up_backward_detail_step(update_pre_in, update_gz, gx, gd, g, get_global_id(2), LIFT_NAMES);
}

__kernel void lift_up_backward_detail_pair(__global const float *update_pre_in_a, __global const float *update_gz_a,
                                           __global const float *gx_a, __global float *gd_a,
                                           __global const float *update_pre_in_b, __global const float *update_gz_b,
                                           __global const float *gx_b, __global float *gd_b, GEOMETRY_PARAMETERS,
                                           LIFT_PARAMETERS) {
    const lift_geometry g = GEOMETRY;
    PAIR_ITEM;
    up_backward_detail_step(PICK(update_pre_in), PICK(update_gz), PICK(gx), PICK(gd), g, item, LIFT_NAMES);
}

inline void up_parameter_gradients_step(__global const float *even, __global const float *d,
                                        __global const float *predict_pre_in, __global const float *predict_gz,
                                        __global const float *update_pre_in, __global const float *update_gz,
                                        __global float *gpw, __global float *gpb, __global float *gps,
                                        __global float *gpt, __global float *guw, __global float *gub,
                                        __global float *gus, __global float *gut, int accumulate,
                                        const lift_geometry g, __local float *scratch, LIFT_PARAMETERS) {
    int c = get_group_id(0);
    int lid = get_local_id(0);
    run_vector sums[GRADIENT_SLOTS];
    for (int k = 0; k < GRADIENT_SLOTS; ++k) sums[k] = 0.0f;
    int total = reduction_units(g);
    int is = g.in_step;
    for (int e = lid; e < total; e += LIFT_GROUP) {
        int m0, line, plane;
        const run_access layout = reduction_unit(g, c, e, &m0, &line, &plane);
        int base = plane * g.in_plane + line * g.in_line;
        const run_access own = band_access(layout, m0, m0 + RUN, g.band, is);
        const run_access halo = band_access(layout, m0 - HALF, m0 + RUN + HALF, g.band, is);
        // P at m (input x_e): its output receives gx_o[m]. U at m (input d): its output receives
        // -gs[m]. Lanes past the band read pre = gz = 0: no share.
        run_vector ap = band_run(predict_pre_in + base, m0, own, g.band, is);
        run_vector gzp = band_run(predict_gz + base, m0, own, g.band, is);
        run_vector gap = gate_gradient_run(ap, gzp, ps[c]);
        run_vector au = band_run(update_pre_in + base, m0, own, g.band, is);
        run_vector gzu = band_run(update_gz + base, m0, own, g.band, is);
        run_vector gau = gate_gradient_run(au, gzu, us[c]);
        for (int t = 0; t < KERNEL_SIZE; ++t) {
            sums[t] += gap * band_run(even + base, m0 + t - HALF, halo, g.band, is);
            sums[KERNEL_SIZE + 3 + t] += gau * band_run(d + base, m0 + t - HALF, halo, g.band, is);
        }
        sums[KERNEL_SIZE] += gap;
        sums[KERNEL_SIZE + 1] += gzp * run_relu(ap);
        sums[KERNEL_SIZE + 2] += gzp;
        sums[2 * KERNEL_SIZE + 3] += gau;
        sums[2 * KERNEL_SIZE + 4] += gzu * run_relu(au);
        sums[2 * KERNEL_SIZE + 5] += gzu;
    }
    float totals[GRADIENT_SLOTS];
    lane_totals(sums, totals);
    store_parameter_gradients(totals, scratch, lid, c, accumulate, gpw, gpb, gps, gpt, guw, gub, gus, gut);
}

__kernel void lift_up_parameter_gradients(__global const float *even, __global const float *d,
                                          __global const float *predict_pre_in, __global const float *predict_gz,
                                          __global const float *update_pre_in, __global const float *update_gz,
                                          __global float *gpw, __global float *gpb, __global float *gps,
                                          __global float *gpt, __global float *guw, __global float *gub,
                                          __global float *gus, __global float *gut, int accumulate,
                                          GEOMETRY_PARAMETERS, LIFT_PARAMETERS) {
    const lift_geometry g = GEOMETRY;
    __local float scratch[LIFT_GROUP];
    up_parameter_gradients_step(even, d, predict_pre_in, predict_gz, update_pre_in, update_gz, gpw, gpb, gps, gpt, guw,
        gub, gus, gut, accumulate, g, scratch, LIFT_NAMES);
}

// Both column inversions' parameter gradients, in the order of two launches (as
// lift_parameter_gradients_pair).
__kernel void lift_up_parameter_gradients_pair(__global const float *even_a, __global const float *d_a,
                                               __global const float *predict_pre_in_a,
                                               __global const float *predict_gz_a,
                                               __global const float *update_pre_in_a,
                                               __global const float *update_gz_a, __global const float *even_b,
                                               __global const float *d_b, __global const float *predict_pre_in_b,
                                               __global const float *predict_gz_b,
                                               __global const float *update_pre_in_b,
                                               __global const float *update_gz_b, __global float *gpw,
                                               __global float *gpb, __global float *gps, __global float *gpt,
                                               __global float *guw, __global float *gub, __global float *gus,
                                               __global float *gut, int accumulate, GEOMETRY_PARAMETERS,
                                               LIFT_PARAMETERS) {
    const lift_geometry g = GEOMETRY;
    __local float scratch[LIFT_GROUP];
    up_parameter_gradients_step(even_a, d_a, predict_pre_in_a, predict_gz_a, update_pre_in_a, update_gz_a, gpw, gpb,
        gps, gpt, guw, gub, gus, gut, accumulate, g, scratch, LIFT_NAMES);
    up_parameter_gradients_step(even_b, d_b, predict_pre_in_b, predict_gz_b, update_pre_in_b, update_gz_b, gpw, gpb,
        gps, gpt, guw, gub, gus, gut, 1, g, scratch, LIFT_NAMES);
}
