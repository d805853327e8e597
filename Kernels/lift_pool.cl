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

#ifndef KERNEL_SIZE
#define KERNEL_SIZE 5
#endif
#define HALF (KERNEL_SIZE / 2)

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

inline float lift_activation(float a, float scale, float shift) {
    return tanh(scale * fmax(a, 0.0f) + shift);
}

// P(x_e)[j] for the line (j inside 0..M-1).
inline float predict_at(__global const float *line, int j, int length, int band, int step,
                        __global const float *w, float bias, float scale, float shift) {
    float a = bias;
    for (int t = 0; t < KERNEL_SIZE; ++t) a += w[t] * even_sample(line, j + t - HALF, length, band, step);
    return lift_activation(a, scale, shift);
}

// (s[m], d[m]) of a line of x.
inline float2 lift_point(__global const float *line, int m, int length, int band, int step,
                         __global const float *pw, float pb, float ps, float pt,
                         __global const float *uw, float ub, float us, float ut) {
    float a = ub;
    float detail = 0.0f;
    for (int q = 0; q < KERNEL_SIZE; ++q) {
        int j = m + q - HALF;
        if (j < 0 || j >= band) continue;
        float d = odd_sample(line, j, length, step) - predict_at(line, j, length, band, step, pw, pb, ps, pt);
        a += uw[q] * d;
        if (q == HALF) detail = d;
    }
    float s = even_sample(line, m, length, band, step) + lift_activation(a, us, ut);
    return (float2)(s, detail);
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

// Which (m, line, plane) this work item owns; false when it is outside the pass.
inline bool lift_position(const lift_geometry g, int *m, int *line, int *plane) {
    int fast = get_global_id(0);
    int slow = get_global_id(1);
    *plane = get_global_id(2);
    *m = g.along_width ? fast : slow;
    *line = g.along_width ? slow : fast;
    return *m < g.band && *line < g.lines && *plane < g.planes;
}

// One lifting of x into bands s and d; with `sum` != 0 also y = s + d (the 1-D layer's output).
__kernel void lift_down(__global const float *x, __global float *s, __global float *d, __global float *y,
                        int sum, GEOMETRY_PARAMETERS, LIFT_PARAMETERS) {
    const lift_geometry g = GEOMETRY;
    int m, line, plane;
    if (!lift_position(g, &m, &line, &plane)) return;
    int c = plane % g.channels;
    __global const float *source = x + plane * g.in_plane + line * g.in_line;
    float2 bands = lift_point(source, m, g.length, g.band, g.in_step, LIFT_ARGUMENTS(c));
    int out = plane * g.out_plane + line * g.out_line + m * g.out_step;
    s[out] = bands.x;
    d[out] = bands.y;
    if (sum) y[out] = bands.x + bands.y;
}

// The two column liftings of a 2-D layer in one pass: (s_h, d_h) -> LL, LH, HL, HH and
// y = LL + LH + HL + HH. s_h and d_h share the geometry.
__kernel void lift_down_pair(__global const float *sh, __global const float *dh,
                             __global float *ll, __global float *lh, __global float *hl, __global float *hh,
                             __global float *y, GEOMETRY_PARAMETERS, LIFT_PARAMETERS) {
    const lift_geometry g = GEOMETRY;
    int m, line, plane;
    if (!lift_position(g, &m, &line, &plane)) return;
    int c = plane % g.channels;
    int in = plane * g.in_plane + line * g.in_line;
    float2 low = lift_point(sh + in, m, g.length, g.band, g.in_step, LIFT_ARGUMENTS(c));
    float2 high = lift_point(dh + in, m, g.length, g.band, g.in_step, LIFT_ARGUMENTS(c));
    int out = plane * g.out_plane + line * g.out_line + m * g.out_step;
    ll[out] = low.x;
    lh[out] = low.y;
    hl[out] = high.x;
    hh[out] = high.y;
    y[out] = (low.x + low.y) + (high.x + high.y);
}

// U(d)[j] for a band line d (j inside 0..M-1).
inline float update_at(__global const float *d, int j, int band, int step,
                       __global const float *w, float bias, float scale, float shift) {
    float a = bias;
    for (int t = 0; t < KERNEL_SIZE; ++t) {
        int k = j + t - HALF;
        bool inside = k >= 0 && k < band;
        float value = d[(inside ? k : 0) * step];
        a += w[t] * (inside ? value : 0.0f);
    }
    return lift_activation(a, scale, shift);
}

// Inverse lifting: bands s, d (the "input" geometry, length = band = M) to x (the "output"
// geometry, length L); each item writes x[2m] and, when 2m+1 < L, x[2m+1].
// Here g.length is L and g.band is M; in_* address the bands, out_* address x.
__kernel void lift_up(__global const float *s, __global const float *d, __global float *x,
                      GEOMETRY_PARAMETERS, LIFT_PARAMETERS) {
    const lift_geometry g = GEOMETRY;
    int m, line, plane;
    if (!lift_position(g, &m, &line, &plane)) return;
    int c = plane % g.channels;
    int in = plane * g.in_plane + line * g.in_line;
    __global const float *sl = s + in;
    __global const float *dl = d + in;
    int step = g.in_step;
    // x_e on m +- K/2 (zero outside), then x_o[m] = d[m] + P(x_e)[m].
    float a = pb[c];
    float even = 0.0f;
    for (int q = 0; q < KERNEL_SIZE; ++q) {
        int j = m + q - HALF;
        if (j < 0 || j >= g.band) continue;
        float e = sl[j * step] - update_at(dl, j, g.band, step, LIFT_ARGUMENTS_U(c));
        a += pw[c * KERNEL_SIZE + q] * e;
        if (q == HALF) even = e;
    }
    float odd = dl[m * step] + lift_activation(a, ps[c], pt[c]);
    __global float *xl = x + plane * g.out_plane + line * g.out_line;
    xl[2 * m * g.out_step] = even;
    if (2 * m + 1 < g.length) xl[(2 * m + 1) * g.out_step] = odd;
}
