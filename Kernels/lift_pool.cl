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

// ReLU that propagates NaN (fmax(NaN, 0) would give 0), as PyTorch's relu does.
inline float lift_relu(float a) {
    return isnan(a) ? a : fmax(a, 0.0f);
}

inline float lift_activation(float a, float scale, float shift) {
    return tanh(scale * lift_relu(a) + shift);
}

// P(x_e)[j] for the line (j inside 0..M-1).
inline float predict_at(__global const float *line, int j, int length, int band, int step,
                        __global const float *w, float bias, float scale, float shift) {
    float a = bias;
    for (int t = 0; t < KERNEL_SIZE; ++t) a += w[t] * even_sample(line, j + t - HALF, length, band, step);
    return lift_activation(a, scale, shift);
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

// Which run (first band position m0, line, plane) this work item owns in the forward and
// inverse kernels, which compute RUN consecutive band positions each.
inline bool lift_run_position(const lift_geometry g, int *m0, int *line, int *plane) {
    int fast = get_global_id(0);
    int slow = get_global_id(1);
    *plane = get_global_id(2);
    *m0 = (g.along_width ? fast : slow) * RUN;
    *line = g.along_width ? slow : fast;
    return *m0 < g.band && *line < g.lines && *plane < g.planes;
}

// s and d at band positions m0 ... m0 + RUN - 1 of a line of x (only those inside the band are
// computed; the caller stores no others). d is evaluated once on the
// run and its K/2 halo on either side (zero outside the band), then U reads it from there.
inline void lift_run(__global const float *line, int m0, int length, int band, int step,
                     __global const float *pw, float pb, float ps, float pt,
                     __global const float *uw, float ub, float us, float ut, float *s, float *d) {
    float detail[RUN + 2 * HALF];
    // Positions past the band (a short last run, tiny maps) are skipped, not evaluated.
    const int valid = min(RUN, band - m0);
    for (int k = 0; k < RUN + 2 * HALF; ++k) {
        int j = m0 - HALF + k;
        bool inside = j >= 0 && j < band && k < valid + 2 * HALF;
        detail[k] = 0.0f;
        if (inside) detail[k] = odd_sample(line, j, length, step) - predict_at(line, j, length, band, step, pw, pb, ps, pt);
    }
    for (int r = 0; r < valid; ++r) {
        int m = m0 + r;
        float a = ub;
        for (int q = 0; q < KERNEL_SIZE; ++q) {
            int j = m + q - HALF;
            if (j >= 0 && j < band) a += uw[q] * detail[r + q];
        }
        s[r] = even_sample(line, m, length, band, step) + lift_activation(a, us, ut);
        d[r] = detail[r + HALF];
    }
}

// One lifting of x into bands s and d; with `sum` != 0 also y = s + d (the 1-D layer's output).
__kernel void lift_down(__global const float *x, __global float *s, __global float *d, __global float *y,
                        int sum, GEOMETRY_PARAMETERS, LIFT_PARAMETERS) {
    const lift_geometry g = GEOMETRY;
    int m0, line, plane;
    if (!lift_run_position(g, &m0, &line, &plane)) return;
    int c = plane % g.channels;
    __global const float *source = x + plane * g.in_plane + line * g.in_line;
    float approximation[RUN];
    float detail[RUN];
    lift_run(source, m0, g.length, g.band, g.in_step, LIFT_ARGUMENTS(c), approximation, detail);
    int out = plane * g.out_plane + line * g.out_line + m0 * g.out_step;
    for (int r = 0; r < RUN && m0 + r < g.band; ++r) {
        s[out + r * g.out_step] = approximation[r];
        d[out + r * g.out_step] = detail[r];
        if (sum) y[out + r * g.out_step] = approximation[r] + detail[r];
    }
}

// The two column liftings of a 2-D layer in one pass: (s_h, d_h) -> LL, LH, HL, HH and
// y = LL + LH + HL + HH. s_h and d_h share the geometry.
__kernel void lift_down_pair(__global const float *sh, __global const float *dh,
                             __global float *ll, __global float *lh, __global float *hl, __global float *hh,
                             __global float *y, GEOMETRY_PARAMETERS, LIFT_PARAMETERS) {
    const lift_geometry g = GEOMETRY;
    int m0, line, plane;
    if (!lift_run_position(g, &m0, &line, &plane)) return;
    int c = plane % g.channels;
    int in = plane * g.in_plane + line * g.in_line;
    float low_s[RUN], low_d[RUN], high_s[RUN], high_d[RUN];
    lift_run(sh + in, m0, g.length, g.band, g.in_step, LIFT_ARGUMENTS(c), low_s, low_d);
    lift_run(dh + in, m0, g.length, g.band, g.in_step, LIFT_ARGUMENTS(c), high_s, high_d);
    int out = plane * g.out_plane + line * g.out_line + m0 * g.out_step;
    for (int r = 0; r < RUN && m0 + r < g.band; ++r) {
        int index = out + r * g.out_step;
        ll[index] = low_s[r];
        lh[index] = low_d[r];
        hl[index] = high_s[r];
        hh[index] = high_d[r];
        y[index] = (low_s[r] + low_d[r]) + (high_s[r] + high_d[r]);
    }
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
// geometry, length L); each item reconstructs RUN band positions: x[2m] and, when 2m+1 < L,
// x[2m+1]. x_e = s - U(d) is evaluated once on the run and its K/2 halo, then P reads it.
// Here g.length is L and g.band is M; in_* address the bands, out_* address x.
__kernel void lift_up(__global const float *s, __global const float *d, __global float *x,
                      GEOMETRY_PARAMETERS, LIFT_PARAMETERS) {
    const lift_geometry g = GEOMETRY;
    int m0, line, plane;
    if (!lift_run_position(g, &m0, &line, &plane)) return;
    int c = plane % g.channels;
    int in = plane * g.in_plane + line * g.in_line;
    __global const float *sl = s + in;
    __global const float *dl = d + in;
    int step = g.in_step;
    float even[RUN + 2 * HALF];
    const int valid = min(RUN, g.band - m0);
    for (int k = 0; k < RUN + 2 * HALF; ++k) {
        int j = m0 - HALF + k;
        bool inside = j >= 0 && j < g.band && k < valid + 2 * HALF;
        even[k] = 0.0f;
        if (inside) even[k] = sl[j * step] - update_at(dl, j, g.band, step, LIFT_ARGUMENTS_U(c));
    }
    __global float *xl = x + plane * g.out_plane + line * g.out_line;
    for (int r = 0; r < RUN && m0 + r < g.band; ++r) {
        int m = m0 + r;
        float a = pb[c];
        for (int q = 0; q < KERNEL_SIZE; ++q) {
            int j = m + q - HALF;
            if (j >= 0 && j < g.band) a += pw[c * KERNEL_SIZE + q] * even[r + q];
        }
        float odd = dl[m * step] + lift_activation(a, ps[c], pt[c]);
        xl[2 * m * g.out_step] = even[r + HALF];
        if (2 * m + 1 < g.length) xl[(2 * m + 1) * g.out_step] = odd;
    }
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
// channel; each item sums its strided share of the channel's band elements in a fixed order,
// then a local-memory tree reduction; the group's item 0 adds the result to the gradient
// buffers (accumulate = 1 for the second and third lifting of a 2-D layer). No atomics, so the
// result is deterministic.
//
// Regularisers (lift_regulariser_partials): work group g sums (s - x_o)^2 and d^2 over a fixed
// strided share, tree-reduces and writes partials[2g], partials[2g + 1]; the host adds the
// partials in order (in double).
#ifndef LIFT_GROUP
#define LIFT_GROUP 64
#endif

#define HAS_GS 1
#define HAS_GD 2
#define HAS_GY 4

inline float predict_pre(__global const float *line, int j, int length, int band, int step,
                         __global const float *w, float bias) {
    float a = bias;
    for (int t = 0; t < KERNEL_SIZE; ++t) a += w[t] * even_sample(line, j + t - HALF, length, band, step);
    return a;
}

inline float update_pre(__global const float *d, int j, int band, int step, __global const float *w, float bias) {
    float a = bias;
    for (int t = 0; t < KERNEL_SIZE; ++t) {
        int k = j + t - HALF;
        bool inside = k >= 0 && k < band;
        float value = d[(inside ? k : 0) * step];
        a += w[t] * (inside ? value : 0.0f);
    }
    return a;
}

inline float upstream(__global const float *g, __global const float *gy, int flags, int own, int index) {
    float value = (flags & own) ? g[index] : 0.0f;
    return value + ((flags & HAS_GY) ? gy[index] : 0.0f);
}

#define BACKWARD_BUFFERS \
    __global const float *x, __global const float *s, __global const float *d, \
    __global const float *gs, __global const float *gd, __global const float *gy, int flags, \
    float cu_scale, float cp_scale

// ga of a stored gate: the gradient reaching the pre-activation (relu'(0) = 0; NaN gives 0, as
// the comparison does in every kernel here).
inline float gate_gradient(float pre, float gz, float scale) {
    return pre > 0.0f ? gz * scale : 0.0f;
}

// Gradient reaching s at band position j of the line at band offset `base`.
inline float approximation_gradient(__global const float *xl, __global const float *s, __global const float *gs,
                                    __global const float *gy, int flags, float cu_scale, int base, int j,
                                    int length, int in_step, int out_step) {
    int index = base + j * out_step;
    return upstream(gs, gy, flags, HAS_GS, index) + cu_scale * (s[index] - odd_sample(xl, j, length, in_step));
}

__kernel void lift_backward_update_gate(BACKWARD_BUFFERS, __global float *update_pre_out, __global float *update_gz,
                                        GEOMETRY_PARAMETERS, LIFT_PARAMETERS) {
    const lift_geometry g = GEOMETRY;
    int m, line, plane;
    if (!lift_position(g, &m, &line, &plane)) return;
    int c = plane % g.channels;
    __global const float *xl = x + plane * g.in_plane + line * g.in_line;
    int base = plane * g.out_plane + line * g.out_line;
    int os = g.out_step;
    float a = update_pre(d + base, m, g.band, os, uw + c * KERNEL_SIZE, ub[c]);
    float u = lift_activation(a, us[c], ut[c]);
    update_pre_out[base + m * os] = a;
    update_gz[base + m * os] =
        approximation_gradient(xl, s, gs, gy, flags, cu_scale, base, m, g.length, g.in_step, os) * (1.0f - u * u);
}

__kernel void lift_backward_detail(BACKWARD_BUFFERS, __global const float *update_pre_in,
                                   __global const float *update_gz, __global float *gdetail,
                                   __global float *predict_pre_out, __global float *predict_gz,
                                   GEOMETRY_PARAMETERS, LIFT_PARAMETERS) {
    const lift_geometry g = GEOMETRY;
    int m, line, plane;
    if (!lift_position(g, &m, &line, &plane)) return;
    int c = plane % g.channels;
    __global const float *xl = x + plane * g.in_plane + line * g.in_line;
    int base = plane * g.out_plane + line * g.out_line;
    int os = g.out_step;
    float total = upstream(gd, gy, flags, HAS_GD, base + m * os) + cp_scale * d[base + m * os];
    for (int t = 0; t < KERNEL_SIZE; ++t) {
        int j = m - t + HALF;
        if (j < 0 || j >= g.band) continue;
        total += gate_gradient(update_pre_in[base + j * os], update_gz[base + j * os], us[c]) * uw[c * KERNEL_SIZE + t];
    }
    gdetail[base + m * os] = total;
    // P's output at m receives -gD[m].
    float a = predict_pre(xl, m, g.length, g.band, g.in_step, pw + c * KERNEL_SIZE, pb[c]);
    float p = lift_activation(a, ps[c], pt[c]);
    predict_pre_out[base + m * os] = a;
    predict_gz[base + m * os] = -total * (1.0f - p * p);
}

__kernel void lift_backward_input(BACKWARD_BUFFERS, __global const float *predict_pre_in,
                                  __global const float *predict_gz, __global const float *gdetail, __global float *gx,
                                  GEOMETRY_PARAMETERS, LIFT_PARAMETERS) {
    const lift_geometry g = GEOMETRY;
    int m, line, plane;
    if (!lift_position(g, &m, &line, &plane)) return;
    int c = plane % g.channels;
    int in = plane * g.in_plane + line * g.in_line;
    __global const float *xl = x + in;
    int base = plane * g.out_plane + line * g.out_line;
    int os = g.out_step;
    int is = g.in_step;
    float residual = s[base + m * os] - odd_sample(xl, m, g.length, is);
    float even = upstream(gs, gy, flags, HAS_GS, base + m * os) + cu_scale * residual;
    for (int t = 0; t < KERNEL_SIZE; ++t) {
        int j = m - t + HALF;
        if (j < 0 || j >= g.band) continue;
        even += gate_gradient(predict_pre_in[base + j * os], predict_gz[base + j * os], ps[c]) * pw[c * KERNEL_SIZE + t];
    }
    float odd = gdetail[base + m * os] - cu_scale * residual;
    __global float *gxl = gx + in;
    if (2 * m + 1 < g.length) {
        gxl[2 * m * is] = even;
        gxl[(2 * m + 1) * is] = odd;
    } else {
        gxl[2 * m * is] = even + odd;  // the padded sample copies the last one
    }
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
__kernel void lift_parameter_gradients(BACKWARD_BUFFERS, __global const float *update_pre_in,
                                       __global const float *update_gz, __global const float *predict_pre_in,
                                       __global const float *predict_gz, __global float *gpw, __global float *gpb, __global float *gps, __global float *gpt,
                                       __global float *guw, __global float *gub, __global float *gus, __global float *gut,
                                       int accumulate, GEOMETRY_PARAMETERS, LIFT_PARAMETERS) {
    const lift_geometry g = GEOMETRY;
    __local float scratch[LIFT_GROUP];
    int c = get_group_id(0);
    int lid = get_local_id(0);
    float sums[GRADIENT_SLOTS];
    for (int k = 0; k < GRADIENT_SLOTS; ++k) sums[k] = 0.0f;
    int batch = g.planes / g.channels;
    int total = batch * g.lines * g.band;
    int os = g.out_step;
    int is = g.in_step;
    for (int e = lid; e < total; e += LIFT_GROUP) {
        int m = e % g.band;
        int rest = e / g.band;
        int line = rest % g.lines;
        int plane = (rest / g.lines) * g.channels + c;
        __global const float *xl = x + plane * g.in_plane + line * g.in_line;
        int base = plane * g.out_plane + line * g.out_line;
        // U at m: its output receives gA[m].
        float au = update_pre_in[base + m * os];
        float ru = lift_relu(au);
        float gz = update_gz[base + m * os];
        float ga = gate_gradient(au, gz, us[c]);
        for (int t = 0; t < KERNEL_SIZE; ++t) {
            int k = m + t - HALF;
            bool inside = k >= 0 && k < g.band;
            float value = d[base + (inside ? k : 0) * os];
            sums[KERNEL_SIZE + 3 + t] += ga * (inside ? value : 0.0f);
        }
        sums[2 * KERNEL_SIZE + 3] += ga;
        sums[2 * KERNEL_SIZE + 4] += gz * ru;
        sums[2 * KERNEL_SIZE + 5] += gz;
        // P at m: its output receives -gD[m].
        float ap = predict_pre_in[base + m * os];
        float rp = lift_relu(ap);
        float gzp = predict_gz[base + m * os];
        float gap = gate_gradient(ap, gzp, ps[c]);
        for (int t = 0; t < KERNEL_SIZE; ++t) sums[t] += gap * even_sample(xl, m + t - HALF, g.length, g.band, is);
        sums[KERNEL_SIZE] += gap;
        sums[KERNEL_SIZE + 1] += gzp * rp;
        sums[KERNEL_SIZE + 2] += gzp;
    }
    store_parameter_gradients(sums, scratch, lid, c, accumulate, gpw, gpb, gps, gpt, guw, gub, gus, gut);
}

// Global size (LIFT_GROUP * groups), local LIFT_GROUP; partials has 2 * groups floats.
__kernel void lift_regulariser_partials(__global const float *x, __global const float *s, __global const float *d,
                                        __global float *partials, GEOMETRY_PARAMETERS) {
    const lift_geometry g = GEOMETRY;
    __local float scratch[LIFT_GROUP];
    int lid = get_local_id(0);
    int total = g.planes * g.lines * g.band;
    float cu = 0.0f;
    float cp = 0.0f;
    for (int e = get_global_id(0); e < total; e += get_global_size(0)) {
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
    if (lid == 0) partials[2 * get_group_id(0)] = scratch[0];
    scratch[lid] = cp;
    group_sum(scratch, lid);
    if (lid == 0) partials[2 * get_group_id(0) + 1] = scratch[0];
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

inline float odd_gradient(__global const float *gxl, int j, int length, int step) {
    bool inside = 2 * j + 1 < length;
    float value = gxl[(inside ? 2 * j + 1 : 0) * step];
    return inside ? value : 0.0f;
}

__kernel void lift_up_even(__global const float *s, __global const float *d, __global float *even,
                           __global float *update_pre_out, GEOMETRY_PARAMETERS, LIFT_PARAMETERS) {
    const lift_geometry g = GEOMETRY;
    int m, line, plane;
    if (!lift_position(g, &m, &line, &plane)) return;
    int c = plane % g.channels;
    int base = plane * g.in_plane + line * g.in_line;
    float a = update_pre(d + base, m, g.band, g.in_step, uw + c * KERNEL_SIZE, ub[c]);
    update_pre_out[base + m * g.in_step] = a;
    even[base + m * g.in_step] = s[base + m * g.in_step] - lift_activation(a, us[c], ut[c]);
}

__kernel void lift_up_predict_gate(__global const float *even, __global const float *gx, __global float *predict_pre_out,
                                   __global float *predict_gz, GEOMETRY_PARAMETERS, LIFT_PARAMETERS) {
    const lift_geometry g = GEOMETRY;
    int m, line, plane;
    if (!lift_position(g, &m, &line, &plane)) return;
    int c = plane % g.channels;
    int base = plane * g.in_plane + line * g.in_line;
    __global const float *gxl = gx + plane * g.out_plane + line * g.out_line;
    // P reads x_e through the same zero-padded band access as U reads d.
    float a = update_pre(even + base, m, g.band, g.in_step, pw + c * KERNEL_SIZE, pb[c]);
    float p = lift_activation(a, ps[c], pt[c]);
    predict_pre_out[base + m * g.in_step] = a;
    predict_gz[base + m * g.in_step] = odd_gradient(gxl, m, g.length, g.out_step) * (1.0f - p * p);
}

__kernel void lift_up_backward_even(__global const float *predict_pre_in, __global const float *predict_gz,
                                    __global const float *update_pre_in, __global const float *gx, __global float *gs,
                                    __global float *update_gz, GEOMETRY_PARAMETERS, LIFT_PARAMETERS) {
    const lift_geometry g = GEOMETRY;
    int m, line, plane;
    if (!lift_position(g, &m, &line, &plane)) return;
    int c = plane % g.channels;
    int base = plane * g.in_plane + line * g.in_line;
    int is = g.in_step;
    __global const float *gxl = gx + plane * g.out_plane + line * g.out_line;
    float total = gxl[2 * m * g.out_step];
    for (int t = 0; t < KERNEL_SIZE; ++t) {
        int j = m - t + HALF;
        if (j < 0 || j >= g.band) continue;
        total += gate_gradient(predict_pre_in[base + j * is], predict_gz[base + j * is], ps[c]) * pw[c * KERNEL_SIZE + t];
    }
    gs[base + m * is] = total;
    // U's output at m receives -gs[m].
    float u = lift_activation(update_pre_in[base + m * is], us[c], ut[c]);
    update_gz[base + m * is] = -total * (1.0f - u * u);
}

__kernel void lift_up_backward_detail(__global const float *update_pre_in, __global const float *update_gz,
                                      __global const float *gx, __global float *gd, GEOMETRY_PARAMETERS,
                                      LIFT_PARAMETERS) {
    const lift_geometry g = GEOMETRY;
    int m, line, plane;
    if (!lift_position(g, &m, &line, &plane)) return;
    int c = plane % g.channels;
    int base = plane * g.in_plane + line * g.in_line;
    int is = g.in_step;
    __global const float *gxl = gx + plane * g.out_plane + line * g.out_line;
    float total = odd_gradient(gxl, m, g.length, g.out_step);
    for (int t = 0; t < KERNEL_SIZE; ++t) {
        int j = m - t + HALF;
        if (j < 0 || j >= g.band) continue;
        total += gate_gradient(update_pre_in[base + j * is], update_gz[base + j * is], us[c]) * uw[c * KERNEL_SIZE + t];
    }
    gd[base + m * is] = total;
}

__kernel void lift_up_parameter_gradients(__global const float *even, __global const float *d,
                                          __global const float *predict_pre_in, __global const float *predict_gz,
                                          __global const float *update_pre_in, __global const float *update_gz,
                                          __global float *gpw, __global float *gpb, __global float *gps, __global float *gpt,
                                          __global float *guw, __global float *gub, __global float *gus, __global float *gut,
                                          int accumulate, GEOMETRY_PARAMETERS, LIFT_PARAMETERS) {
    const lift_geometry g = GEOMETRY;
    __local float scratch[LIFT_GROUP];
    int c = get_group_id(0);
    int lid = get_local_id(0);
    float sums[GRADIENT_SLOTS];
    for (int k = 0; k < GRADIENT_SLOTS; ++k) sums[k] = 0.0f;
    int batch = g.planes / g.channels;
    int total = batch * g.lines * g.band;
    int is = g.in_step;
    for (int e = lid; e < total; e += LIFT_GROUP) {
        int m = e % g.band;
        int rest = e / g.band;
        int line = rest % g.lines;
        int plane = (rest / g.lines) * g.channels + c;
        int base = plane * g.in_plane + line * g.in_line;
        // P at m (input x_e): its output receives gx_o[m].
        float ap = predict_pre_in[base + m * is];
        float gzp = predict_gz[base + m * is];
        float gap = gate_gradient(ap, gzp, ps[c]);
        // U at m (input d): its output receives -gs[m].
        float au = update_pre_in[base + m * is];
        float gzu = update_gz[base + m * is];
        float gau = gate_gradient(au, gzu, us[c]);
        for (int t = 0; t < KERNEL_SIZE; ++t) {
            int k = m + t - HALF;
            bool inside = k >= 0 && k < g.band;
            int index = base + (inside ? k : 0) * is;
            float e_value = even[index];
            float d_value = d[index];
            sums[t] += gap * (inside ? e_value : 0.0f);
            sums[KERNEL_SIZE + 3 + t] += gau * (inside ? d_value : 0.0f);
        }
        sums[KERNEL_SIZE] += gap;
        sums[KERNEL_SIZE + 1] += gzp * lift_relu(ap);
        sums[KERNEL_SIZE + 2] += gzp;
        sums[2 * KERNEL_SIZE + 3] += gau;
        sums[2 * KERNEL_SIZE + 4] += gzu * lift_relu(au);
        sums[2 * KERNEL_SIZE + 5] += gzu;
    }
    store_parameter_gradients(sums, scratch, lid, c, accumulate, gpw, gpb, gps, gpt, guw, gub, gus, gut);
}
