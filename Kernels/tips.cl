// TIPSPool2D (SPEC.md section 5): translation-invariant polyphase sampling, forward, L_undo
// target, losses and backward.
//
// Phases of an even-sized map by (row offset a, column offset b): k = a + 2 b, so p0 = (0,0),
// p1 = (1,0), p2 = (0,1), p3 = (1,1).
//
// Odd sizes: x' reflect-padded one row at the top / column at the left, x'(0) = x(1).
//
//   tips_forward      one work-group per plane (local GROUP_SIZE): psi = ReLU(k x k correlation,
//                     zero padding, NaN kept) chunk by chunk (8 columns per item: vector loads in
//                     the interior), quadrant sums, q and the softmax tau, then y = sum_k tau_k p_k
//                     from the same plane while it is in cache: one pass over x. psi is written
//                     only with TIPS_WRITE_PSI = 1 (training; inference needs only its sums).
//   tips_target       global (W', H', planes): T(x') = x' shifted by (dy, dx), wrapped or zero-filled
//   tips_grad_tau     one work-group per plane: dtau (reduction), + L_FM, + the external
//                     grad_tau (TIPS_GRAD_TAU), softmax adjoint -> per-plane dq (already divided
//                     by the quadrant size and scaled by conv2) and the plane's share of d conv2
//   tips_grad_z       global (W', H', planes): dz = [psi > 0] (dq[quadrant] + L_undo term
//                     + the external grad_psi (TIPS_GRAD_PSI))
//   tips_grad_w1_rows global (k k, H', planes): the d conv1 terms of each x' row and tap
//   tips_grad_input   global (W' / 8, H, planes): dx as a gather over the x' positions that copy it,
//                     8 columns per item (vectors away from the borders)
//   tips_losses       global (planes): per-plane 1 - ||tau|| and sum (psi - T)^2 (host sums)
//   tips_backward_band  the fused backward (the default): one work-group per band of x' rows
//                     (or per batch of small planes): dz of the band and its halo into local
//                     memory (psi recomputed from x, never read back; grad_psi added as in
//                     tips_grad_z), the band's d conv1 row terms, then dx from local memory;
//                     replaces tips_grad_z, tips_grad_w1_rows and tips_grad_input, which stay
//                     for devices whose local memory cannot hold 3 rows of dz (and for
//                     bandElements 0)
//   tips_grad_weights_sum  global (C k k): d conv1 = the row terms summed over n, then rows;
//                     items below C also d conv2 = the plane shares summed in order of n
//
// Determinism: no result depends on GROUP_SIZE, the plane batching or the band size. Per-plane
// sums run over lanes fixed by the sizes (reduce_lanes in reduce_lanes.h); d conv1 is summed per
// x' row with one body in both backward paths, from a dz whose terms both paths add in one
// order (quadrant, L_undo, external grad_psi); dx adds a position's copies in one order in both
// paths.
//
// Defines: GROUP_SIZE (power of two), KERNEL_SIZE (odd), SHIFT_FILL (0 circular, 1 zero),
// TIPS_WRITE_PSI (0 inference, 1 training), TIPS_GRAD_PSI and TIPS_GRAD_TAU (1: the backward
// adds the caller's gradient of psi / tau; 0: the grad_psi / grad_tau arguments are never read,
// so a plain backward binds any buffer there and loads nothing).
#include "common.h"

#ifndef GROUP_SIZE
#define GROUP_SIZE 64
#endif
#ifndef KERNEL_SIZE
#define KERNEL_SIZE 3
#endif
#ifndef SHIFT_FILL
#define SHIFT_FILL 0
#endif
#ifndef TIPS_WRITE_PSI
#define TIPS_WRITE_PSI 0
#endif
#ifndef TIPS_GRAD_PSI
#define TIPS_GRAD_PSI 0
#endif
#ifndef TIPS_GRAD_TAU
#define TIPS_GRAD_TAU 0
#endif

#include "reduce_lanes.h"

// Input row of x' row r (x' has `pad` = H & 1 reflected rows on top; x'(0) = x(1) when padded).
inline int tips_source(int r, int pad) {
    const int q = r - pad;
    return q < 0 ? 1 : q;
}

// Index of x'(r, s) within plane `plane` of x, or -1 outside x' (the correlation's zero padding).
inline int tips_index(int plane, int r, int s, int height, int width) {
    const int ph = height & 1;
    const int pw = width & 1;
    const bool inside = r >= 0 && r < height + ph && s >= 0 && s < width + pw;
    return inside ? plane_offset(plane, tips_source(r, ph), tips_source(s, pw), height, width) : -1;
}

// psi at x'(r, s), one element (border columns and chunks that overhang the row).
inline float tips_psi_at(__global const float *x, __global const float *w, int plane, int r, int s, int height,
                         int width) {
    const int p = (KERNEL_SIZE - 1) / 2;
    float z = 0.0f;
    for (int u = 0; u < KERNEL_SIZE; ++u) {
        for (int v = 0; v < KERNEL_SIZE; ++v) {
            z += w[u * KERNEL_SIZE + v] * load_or_zero(x, tips_index(plane, r + u - p, s + v - p, height, width));
        }
    }
    return (z > 0.0f || isnan(z)) ? z : 0.0f;
}

// psi at x'(r, s0 ... s0 + 7) for a chunk whose taps all read inside the unpadded columns of x
// (s0 - p >= pw and s0 + 7 + p < W'): one vector load per tap instead of eight gathers. Rows
// outside x' read the constant 0 (multiplied in, as the scalar path does, so a non-finite
// weight behaves the same); the row index is clamped first so no load leaves the plane.
inline float8 tips_psi_chunk(__global const float *x, __global const float *w, int plane, int r, int s0, int height,
                             int width) {
    const int p = (KERNEL_SIZE - 1) / 2;
    const int ph = height & 1;
    const int pw = width & 1;
    const int hp = height + ph;
    float8 z = (float8)(0.0f);
    for (int u = 0; u < KERNEL_SIZE; ++u) {
        const int rr = r + u - p;
        const bool inside = rr >= 0 && rr < hp;
        __global const float *line =
            x + plane_offset(plane, inside ? tips_source(rr, ph) : 0, 0, height, width) + s0 - pw - p;
        for (int v = 0; v < KERNEL_SIZE; ++v) {
            const float8 values = vload8(0, line + v);
            z += w[u * KERNEL_SIZE + v] * (inside ? values : (float8)(0.0f));
        }
    }
    return select((float8)(0.0f), z, (z > 0.0f) | isnan(z));
}

inline float sum8(float8 v) {
    const float4 a = v.lo + v.hi;
    const float2 b = a.lo + a.hi;
    return b.x + b.y;
}

// y(i, j) = sum_k tau_k p_k(x')(i, j), one element.
inline float tips_mix_at(__global const float *x, __local const float *t, int plane, int i, int j, int height,
                         int width) {
    float sum = 0.0f;
    for (int k = 0; k < 4; ++k) sum += t[k] * x[tips_index(plane, 2 * i + (k & 1), 2 * j + (k >> 1), height, width)];
    return sum;
}

// The whole TIPS forward of a plane in one work-group (global ceil(planes / planes_per_group) *
// GROUP_SIZE, local GROUP_SIZE; small planes are batched so a work-group is not mostly launch
// overhead), so the plane is read from memory once: (1) psi chunk by chunk (TIPS_LANES = 8
// columns per item and step, interior chunks vectorised, border chunks element by element),
// quadrant sums in registers, psi written only with TIPS_WRITE_PSI (training); (2) a fixed-shape
// tree reduction, q and the softmax tau; (3) the mixture, re-reading the plane (now in cache),
// eight outputs per item and step. Deterministic: every order depends only on the sizes.
__kernel __attribute__((reqd_work_group_size(GROUP_SIZE, 1, 1)))
void tips_forward(__global const float *x, __global const float *w1, __global const float *w2, __global float *psi,
                  __global float *q, __global float *tau, __global float *y, int planes, int channels, int height,
                  int width, int planes_per_group) {
    __local float partial[4 * REDUCE_LANES];
    __local float mix[4];
    const int item = get_local_id(0);
    const int first_plane = get_group_id(0) * planes_per_group;
    for (int plane = first_plane; plane < min(first_plane + planes_per_group, planes); ++plane) {
        const int p = (KERNEL_SIZE - 1) / 2;
        const int pw = width & 1;
        const int hp = height + (height & 1);
        const int wp = width + pw;
        const int hh = hp / 2;
        const int hw = wp / 2;
        // Columns lo ... hi - 1 read x directly for every tap; each row is one unit of its border
        // columns (element by element) plus `vectors` units of 8 interior columns, the last one
        // overlapping its predecessor (its repeated lanes are masked out of the sums).
        const int lo = p + pw;
        const int hi = max(wp - p, lo);
        const int vectors = hi - lo >= 8 ? (hi - lo + 7) / 8 : 0;
        const int units = 1 + vectors;
        __global const float *w = w1 + (plane % channels) * KERNEL_SIZE * KERNEL_SIZE;
        const int lanes = reduce_lanes(hp * units);
        for (int lane = item; lane < lanes; lane += GROUP_SIZE) {
            float acc[4] = {0.0f, 0.0f, 0.0f, 0.0f};
            for (int e = lane; e < hp * units; e += lanes) {
                const int r = e / units;
                const int unit = e - r * units;
                const bool bottom = r >= hh;
                if (unit > 0) {
                    const int start = lo + (unit - 1) * 8;
                    const int s0 = min(start, hi - 8);
                    const float8 value = tips_psi_chunk(x, w, plane, r, s0, height, width);
    #if TIPS_WRITE_PSI
                    vstore8(value, 0, psi + plane_offset(plane, r, s0, hp, wp));
    #endif
                    const int8 column = (int8)(s0) + (int8)(0, 1, 2, 3, 4, 5, 6, 7);
                    const int8 fresh = column >= (int8)(start);
                    const int8 left = column < (int8)(hw);
                    const float left_sum = sum8(select((float8)(0.0f), value, fresh & left));
                    const float right_sum = sum8(select((float8)(0.0f), value, fresh & ~left));
                    acc[0] += bottom ? 0.0f : left_sum;
                    acc[1] += bottom ? 0.0f : right_sum;
                    acc[2] += bottom ? left_sum : 0.0f;
                    acc[3] += bottom ? right_sum : 0.0f;
                } else {
                    // The border columns, or the whole row when it is too narrow for a vector.
                    const int inner_end = vectors > 0 ? lo : wp;
                    const int outer_start = vectors > 0 ? hi : wp;
                    for (int index = 0; index < inner_end + wp - outer_start; ++index) {
                        const int s = index < inner_end ? index : outer_start + index - inner_end;
                        const float value = tips_psi_at(x, w, plane, r, s, height, width);
    #if TIPS_WRITE_PSI
                        psi[plane_offset(plane, r, s, hp, wp)] = value;
    #endif
                        const int k = (bottom ? 2 : 0) + (s < hw ? 0 : 1);
                        acc[0] += k == 0 ? value : 0.0f;
                        acc[1] += k == 1 ? value : 0.0f;
                        acc[2] += k == 2 ? value : 0.0f;
                        acc[3] += k == 3 ? value : 0.0f;
                    }
                }
            }
            for (int k = 0; k < 4; ++k) partial[k * REDUCE_LANES + lane] = acc[k];
        }
        sum_lanes(partial, 4, lanes, item);
        if (item == 0) {
            const float scale = w2[plane % channels];
            const float area = (float)(hh * hw);
            float logits[4];
            float largest = -INFINITY;
            for (int k = 0; k < 4; ++k) {
                const float mean = partial[k * REDUCE_LANES] / area;
                q[plane * 4 + k] = mean;
                logits[k] = mean * scale;
                largest = fmax(largest, logits[k]);
            }
            float total = 0.0f;
            for (int k = 0; k < 4; ++k) {
                logits[k] = exp(logits[k] - largest);
                total += logits[k];
            }
            for (int k = 0; k < 4; ++k) {
                mix[k] = logits[k] / total;
                tau[plane * 4 + k] = mix[k];
            }
        }
        barrier(CLK_LOCAL_MEM_FENCE);
        const int ph = height & 1;
        // Outputs j >= pw read x columns 2 j - pw and 2 j + 1 - pw directly; the same unit scheme
        // as above (overlapping stores write equal values).
        const int out_vectors = hw - pw >= 8 ? (hw - pw + 7) / 8 : 0;
        const int out_units = 1 + out_vectors;
        for (int e = item; e < hh * out_units; e += GROUP_SIZE) {
            const int i = e / out_units;
            const int unit = e - i * out_units;
            if (unit > 0) {
                const int j0 = min(pw + (unit - 1) * 8, hw - 8);
                __global const float *even_row = x + plane_offset(plane, tips_source(2 * i, ph), 2 * j0 - pw, height, width);
                __global const float *odd_row = x + plane_offset(plane, tips_source(2 * i + 1, ph), 2 * j0 - pw, height, width);
                const float16 a = vload16(0, even_row);
                const float16 b = vload16(0, odd_row);
                float8 sum = (float8)(0.0f);
                sum += mix[0] * a.even;
                sum += mix[1] * b.even;
                sum += mix[2] * a.odd;
                sum += mix[3] * b.odd;
                vstore8(sum, 0, y + plane_offset(plane, i, j0, hh, hw));
            } else {
                for (int j = 0; j < (out_vectors > 0 ? pw : hw); ++j) {
                    y[plane_offset(plane, i, j, hh, hw)] = tips_mix_at(x, mix, plane, i, j, height, width);
                }
            }
        }
    }
}

// Index within x of T(x')(r, s) = x'(r - dy, s - dx), wrapped (SHIFT_FILL 0) or -1 (zero fill).
inline int tips_target_index(int plane, int r, int s, int dy, int dx, int height, int width) {
    const int hp = height + (height & 1);
    const int wp = width + (width & 1);
    int sr = r - dy;
    int ss = s - dx;
#if SHIFT_FILL == 0
    sr = ((sr % hp) + hp) % hp;
    ss = ((ss % wp) + wp) % wp;
#endif
    return tips_index(plane, sr, ss, height, width);
}

__kernel void tips_target(__global const float *x, __global float *target, int planes, int height, int width, int dy,
                          int dx) {
    const int s = get_global_id(0);
    const int r = get_global_id(1);
    const int plane = get_global_id(2);
    const int hp = height + (height & 1);
    const int wp = width + (width & 1);
    if (s >= wp || r >= hp || plane >= planes) return;
    target[plane_offset(plane, r, s, hp, wp)] = load_or_zero(x, tips_target_index(plane, r, s, dy, dx, height, width));
}

__kernel __attribute__((reqd_work_group_size(GROUP_SIZE, 1, 1)))
void tips_grad_tau(__global const float *x, __global const float *grad_y, __global const float *q,
                   __global const float *tau, __global const float *grad_tau, __global const float *w2,
                   __global float *grad_q, __global float *grad_w2_share, int channels, int height, int width,
                   float fm_scale) {
    __local float partial[4 * REDUCE_LANES];
    const int plane = get_group_id(0);
    const int item = get_local_id(0);
    const int oh = (height + 1) / 2;
    const int ow = (width + 1) / 2;
    const int lanes = reduce_lanes(oh);
    for (int lane = item; lane < lanes; lane += GROUP_SIZE) {
        float acc[4] = {0.0f, 0.0f, 0.0f, 0.0f};
        for (int i = lane; i < oh; i += lanes) {
            for (int j = 0; j < ow; ++j) {
                const float g = grad_y[plane_offset(plane, i, j, oh, ow)];
                for (int k = 0; k < 4; ++k) {
                    acc[k] += g * x[tips_index(plane, 2 * i + (k & 1), 2 * j + (k >> 1), height, width)];
                }
            }
        }
        for (int k = 0; k < 4; ++k) partial[k * REDUCE_LANES + lane] = acc[k];
    }
    sum_lanes(partial, 4, lanes, item);
    if (item == 0) {
        float t[4];
        float g[4];
        float norm = 0.0f;
        for (int k = 0; k < 4; ++k) {
            t[k] = tau[plane * 4 + k];
            norm += t[k] * t[k];
        }
        norm = sqrt(norm);
        float inner = 0.0f;
        for (int k = 0; k < 4; ++k) {
            g[k] = partial[k * REDUCE_LANES] - fm_scale * t[k] / norm;
#if TIPS_GRAD_TAU
            g[k] += grad_tau[plane * 4 + k];
#endif
            inner += t[k] * g[k];
        }
        const float scale = w2[plane % channels];
        const float area = (float)(((height + 1) / 2) * ((width + 1) / 2));
        float share = 0.0f;
        for (int k = 0; k < 4; ++k) {
            const float grad_logit = t[k] * (g[k] - inner);
            share += grad_logit * q[plane * 4 + k];
            grad_q[plane * 4 + k] = grad_logit * scale / area;
        }
        grad_w2_share[plane] = share;
    }
}

__kernel void tips_grad_z(__global const float *psi, __global const float *grad_q, __global const float *target,
                          __global const float *grad_psi, __global float *grad_z, int planes, int padded_height,
                          int padded_width, float undo_scale) {
    const int s = get_global_id(0);
    const int r = get_global_id(1);
    const int plane = get_global_id(2);
    if (s >= padded_width || r >= padded_height || plane >= planes) return;
    const int index = plane_offset(plane, r, s, padded_height, padded_width);
    const int quadrant = (r < padded_height / 2 ? 0 : 2) + (s < padded_width / 2 ? 0 : 1);
    const float value = psi[index];
    float g = grad_q[plane * 4 + quadrant] + undo_scale * (value - target[index]);
#if TIPS_GRAD_PSI
    g += grad_psi[index];
#endif
    grad_z[index] = value > 0.0f ? g : 0.0f;
}

// x'(row, cc) from the x row `line` (0 outside x': the correlation's zero padding).
inline float tips_tap(__global const float *line, int cc, int wp, int pw) {
    const bool inside = cc >= 0 && cc < wp;
    const float value = line[inside ? tips_source(cc, pw) : 0];
    return inside ? value : 0.0f;
}

// d conv1 term of x' row r and tap t = u k + v: sum over s of dz(r, s) x'(r + u - p, s + v - p),
// with dz row r at `gz` (global memory in the unfused passes, local memory in the fused band
// kernel: one body for both, so both give the same bits). The order is fixed by the sizes: the
// left border columns, then 8-lane vectors over the columns whose tap reads x directly (lanes
// added in sum8's tree), then the rest of them and the right border columns.
#define TIPS_W1_ROW(NAME, SPACE)                                                                           \
    inline float NAME(__global const float *x, SPACE const float *gz, int plane, int r, int t, int height,  \
                      int width) {                                                                         \
        const int p = (KERNEL_SIZE - 1) / 2;                                                               \
        const int u = t / KERNEL_SIZE;                                                                     \
        const int v = t - u * KERNEL_SIZE;                                                                 \
        const int ph = height & 1;                                                                         \
        const int pw = width & 1;                                                                          \
        const int wp = width + pw;                                                                         \
        const int rr = r + u - p;                                                                          \
        if (rr < 0 || rr >= height + ph) return 0.0f; /* zero padding: the tap adds nothing */             \
        __global const float *line = x + plane_offset(plane, tips_source(rr, ph), 0, height, width);       \
        const int first = clamp(p - v + pw, 0, wp);                                                        \
        const int end = clamp(wp + p - v, first, wp);                                                      \
        __global const float *shifted = line + v - p - pw;                                                 \
        float sum = 0.0f;                                                                                  \
        for (int s = 0; s < first; ++s) sum += gz[s] * tips_tap(line, s + v - p, wp, pw);                  \
        float8 lanes = (float8)(0.0f);                                                                     \
        int s = first;                                                                                     \
        for (; s + 8 <= end; s += 8) lanes += vload8(0, gz + s) * vload8(0, shifted + s);                  \
        sum += sum8(lanes);                                                                                \
        for (; s < end; ++s) sum += gz[s] * shifted[s];                                                    \
        for (int b = end; b < wp; ++b) sum += gz[b] * tips_tap(line, b + v - p, wp, pw);                   \
        return sum;                                                                                        \
    }

TIPS_W1_ROW(tips_w1_row_global, __global)
TIPS_W1_ROW(tips_w1_row_local, __local)

// d conv1 terms of every x' row and tap (global (k*k, H', planes)) into
// w1_rows[(plane * H' + r) * k*k + t]; tips_grad_weights_sum adds them in a fixed order. No
// work-group reduction, so no launch parameter can change the result.
__kernel void tips_grad_w1_rows(__global const float *x, __global const float *grad_z, __global float *w1_rows,
                                int planes, int height, int width) {
    const int t = get_global_id(0);
    const int r = get_global_id(1);
    const int plane = get_global_id(2);
    const int hp = height + (height & 1);
    const int wp = width + (width & 1);
    if (t >= KERNEL_SIZE * KERNEL_SIZE || r >= hp || plane >= planes) return;
    w1_rows[(plane * hp + r) * KERNEL_SIZE * KERNEL_SIZE + t] =
        tips_w1_row_global(x, grad_z + plane_offset(plane, r, 0, hp, wp), plane, r, t, height, width);
}

// Gradient at x'(r, s): the mixing term plus the correlation's adjoint.
inline float tips_grad_padded(__global const float *grad_y, __global const float *tau, __global const float *grad_z,
                              __global const float *w, int plane, int r, int s, int hp, int wp) {
    const int k = (r & 1) + 2 * (s & 1);
    float g = tau[plane * 4 + k] * grad_y[plane_offset(plane, r / 2, s / 2, hp / 2, wp / 2)];
    const int p = (KERNEL_SIZE - 1) / 2;
    for (int u = 0; u < KERNEL_SIZE; ++u) {
        const int zr = r - u + p;
        for (int v = 0; v < KERNEL_SIZE; ++v) {
            const int zs = s - v + p;
            const bool inside = zr >= 0 && zr < hp && zs >= 0 && zs < wp;
            g += w[u * KERNEL_SIZE + v] * load_or_zero(grad_z, inside ? plane_offset(plane, zr, zs, hp, wp) : -1);
        }
    }
    return g;
}

// Gradient of input element (r, s): every x' position that copies it (r + ph, s + pw, and the
// reflected row / column 0 when r = 1 / s = 1 on odd sizes), added in the order the fused
// tips_backward_band adds them (its vector chunks when W' >= 8, its element path otherwise), so
// the unfused passes give the same bits.
inline float tips_grad_input_at(__global const float *grad_y, __global const float *tau, __global const float *grad_z,
                                __global const float *w, int plane, int r, int s, int height, int width) {
    const int ph = height & 1;
    const int pw = width & 1;
    const int hp = height + ph;
    const int wp = width + pw;
    const bool extra_row = ph && r == 1;
    const bool extra_col = pw && s == 1;
    const int R = r + ph;
    const int S = s + pw;
    float g = tips_grad_padded(grad_y, tau, grad_z, w, plane, R, S, hp, wp);
    if (wp >= 8) {
        if (extra_row) g += tips_grad_padded(grad_y, tau, grad_z, w, plane, 0, S, hp, wp);
        if (extra_col) {
            float column = tips_grad_padded(grad_y, tau, grad_z, w, plane, R, 0, hp, wp);
            if (extra_row) column += tips_grad_padded(grad_y, tau, grad_z, w, plane, 0, 0, hp, wp);
            g += column;
        }
    } else {
        if (extra_col) g += tips_grad_padded(grad_y, tau, grad_z, w, plane, R, 0, hp, wp);
        if (extra_row) {
            g += tips_grad_padded(grad_y, tau, grad_z, w, plane, 0, S, hp, wp);
            if (extra_col) g += tips_grad_padded(grad_y, tau, grad_z, w, plane, 0, 0, hp, wp);
        }
    }
    return g;
}

// One item per 8 x' columns S0 ... S0 + 7 (S0 a multiple of 8) of input row r: global
// (ceil(W' / 8), H, planes). Where the chunk holds no reflected copy and every tap of the
// correlation's adjoint stays inside x', the 8 gradients are vectors (one load per tap, the
// mixing term from 4 output gradients, each used twice); elsewhere element by element.
__kernel void tips_grad_input(__global const float *grad_y, __global const float *tau, __global const float *grad_z,
                              __global const float *w1, __global float *grad_x, int planes, int channels, int height,
                              int width) {
    const int S0 = get_global_id(0) * 8;
    const int r = get_global_id(1);
    const int plane = get_global_id(2);
    const int ph = height & 1;
    const int pw = width & 1;
    const int hp = height + ph;
    const int wp = width + pw;
    if (S0 >= wp || r >= height || plane >= planes) return;
    const int p = (KERNEL_SIZE - 1) / 2;
    __global const float *w = w1 + (plane % channels) * KERNEL_SIZE * KERNEL_SIZE;
    __global float *out = grad_x + plane_offset(plane, r, 0, height, width);
    const bool plain_row = !(ph && r == 1);
    if (plain_row && S0 - pw >= 2 * pw && S0 >= p && S0 + 7 + p < wp) {
        const int R = r + ph;
        const float4 g4 = vload4(0, grad_y + plane_offset(plane, R / 2, S0 / 2, hp / 2, wp / 2));
        const float even_tau = tau[plane * 4 + (R & 1)];
        const float odd_tau = tau[plane * 4 + (R & 1) + 2];
        float8 g = (float8)(even_tau, odd_tau, even_tau, odd_tau, even_tau, odd_tau, even_tau, odd_tau) *
                   (float8)(g4.s0, g4.s0, g4.s1, g4.s1, g4.s2, g4.s2, g4.s3, g4.s3);
        for (int u = 0; u < KERNEL_SIZE; ++u) {
            const int zr = R - u + p;
            const bool inside = zr >= 0 && zr < hp;
            __global const float *line = grad_z + plane_offset(plane, inside ? zr : 0, S0 + p, hp, wp);
            for (int v = 0; v < KERNEL_SIZE; ++v) {
                const float8 values = vload8(0, line - v);
                g += w[u * KERNEL_SIZE + v] * (inside ? values : (float8)(0.0f));
            }
        }
        vstore8(g, 0, out + S0 - pw);
    } else {
        for (int S = max(S0, pw); S < min(S0 + 8, wp); ++S) {
            out[S - pw] = tips_grad_input_at(grad_y, tau, grad_z, w, plane, r, S - pw, height, width);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// TIPS backward, fused: dz, d conv1 and dx of one band of x' rows in one work-group, so dz never
// goes to memory and psi is recomputed from x (exactly as tips_forward computes it) instead of
// being read back.

// dz = [psi > 0] (dq[quadrant] + L_undo term + grad_psi) of 8 values of row r from column s0
// (psi NaN: 0, as the unfused tips_grad_z), the terms added in tips_grad_z's order.
inline float8 tips_dz_chunk(float8 psi, __global const float *grad_q, __global const float *target,
                            __global const float *grad_psi, int plane, int r, int s0, int hp, int wp, int has_target,
                            float undo_scale) {
    const int8 column = (int8)(s0) + (int8)(0, 1, 2, 3, 4, 5, 6, 7);
    const int top = r < hp / 2 ? 0 : 2;
    const float left = grad_q[plane * 4 + top];
    const float right = grad_q[plane * 4 + top + 1];
    float8 g = select((float8)(right), (float8)(left), column < (int8)(wp / 2));
    if (has_target) g += undo_scale * (psi - vload8(0, target + plane_offset(plane, r, s0, hp, wp)));
#if TIPS_GRAD_PSI
    g += vload8(0, grad_psi + plane_offset(plane, r, s0, hp, wp));
#endif
    return select((float8)(0.0f), g, psi > 0.0f);
}

inline float tips_dz_at(float psi, __global const float *grad_q, __global const float *target,
                        __global const float *grad_psi, int plane, int r, int s, int hp, int wp, int has_target,
                        float undo_scale) {
    const int quadrant = (r < hp / 2 ? 0 : 2) + (s < wp / 2 ? 0 : 1);
    float g = grad_q[plane * 4 + quadrant];
    if (has_target) g += undo_scale * (psi - target[plane_offset(plane, r, s, hp, wp)]);
#if TIPS_GRAD_PSI
    g += grad_psi[plane_offset(plane, r, s, hp, wp)];
#endif
    return psi > 0.0f ? g : 0.0f;
}

// Gradient at x'(r, s) from the band's dz in local memory (row stride wp + 2p, first row
// r0 - p, p zero columns on each side): the mixing term plus the correlation's adjoint.
inline float tips_band_grad_at(__global const float *grad_y, __global const float *tau, __local const float *dz,
                               __global const float *w, int plane, int r, int s, int r0, int hp, int wp) {
    const int p = (KERNEL_SIZE - 1) / 2;
    const int stride = wp + 2 * p;
    float g = tau[plane * 4 + (r & 1) + 2 * (s & 1)] * grad_y[plane_offset(plane, r / 2, s / 2, hp / 2, wp / 2)];
    for (int u = 0; u < KERNEL_SIZE; ++u) {
        __local const float *line = dz + (r - r0 - u + 2 * p) * stride + s + 2 * p;
        for (int v = 0; v < KERNEL_SIZE; ++v) g += w[u * KERNEL_SIZE + v] * line[-v];
    }
    return g;
}

// The same for x'(r, s0 ... s0 + 7), s0 even and s0 + 8 <= wp.
inline float8 tips_band_grad_chunk(__global const float *grad_y, __global const float *tau, __local const float *dz,
                                   __global const float *w, int plane, int r, int s0, int r0, int hp, int wp) {
    const int p = (KERNEL_SIZE - 1) / 2;
    const int stride = wp + 2 * p;
    const float4 g4 = vload4(0, grad_y + plane_offset(plane, r / 2, s0 / 2, hp / 2, wp / 2));
    const float even_tau = tau[plane * 4 + (r & 1)];
    const float odd_tau = tau[plane * 4 + (r & 1) + 2];
    float8 g = (float8)(even_tau, odd_tau, even_tau, odd_tau, even_tau, odd_tau, even_tau, odd_tau) *
               (float8)(g4.s0, g4.s0, g4.s1, g4.s1, g4.s2, g4.s2, g4.s3, g4.s3);
    for (int u = 0; u < KERNEL_SIZE; ++u) {
        __local const float *line = dz + (r - r0 - u + 2 * p) * stride + s0 + 2 * p;
        for (int v = 0; v < KERNEL_SIZE; ++v) g += w[u * KERNEL_SIZE + v] * vload8(0, line - v);
    }
    return g;
}

// Input gradient of input row r (x' row r + ph) at x' column s: the x' positions that copy the
// input element (the reflected row 0 / column 0 of odd sizes add to input row / column 1).
inline float tips_band_input_at(__global const float *grad_y, __global const float *tau, __local const float *dz,
                                __global const float *w, int plane, int R, int S, int r0, int hp, int wp, int ph,
                                int pw) {
    float g = tips_band_grad_at(grad_y, tau, dz, w, plane, R, S, r0, hp, wp);
    if (pw && S == 2) g += tips_band_grad_at(grad_y, tau, dz, w, plane, R, 0, r0, hp, wp);
    if (ph && R == 2) {
        g += tips_band_grad_at(grad_y, tau, dz, w, plane, 0, S, r0, hp, wp);
        if (pw && S == 2) g += tips_band_grad_at(grad_y, tau, dz, w, plane, 0, 0, r0, hp, wp);
    }
    return g;
}

// One work-group (local GROUP_SIZE) per band of `band_rows` x' rows of `planes_per_group`
// planes: global (ceil(planes / planes_per_group) * bands * GROUP_SIZE), bands = ceil(H' /
// band_rows); band_rows >= 3 unless it covers the plane, so the band holding x' row 2 also
// holds the reflected row 0. dz_band holds (band_rows + 2p) x (W' + 2p) floats.
//   (1) dz of the band's rows and p halo rows on each side (zero outside x', and in the p
//       zero columns on each side), into local memory; psi chunk by chunk as in tips_forward,
//       grad_psi (TIPS_GRAD_PSI) read at the same positions.
//   (2) dx of the band's input rows: 8 x' columns per item and step from local memory (the
//       last chunk of a row overlaps its predecessor and stores only its new columns; rows
//       narrower than 8 go element by element), reflected copies folded into row / column 1.
//   (3) the d conv1 terms of each own row and tap (tips_w1_row_local, one (row, tap) per item)
//       into w1_partial[(plane * H' + r) * k*k + t]; tips_grad_weights_sum adds them in a fixed order.
// No atomics, and no sum whose order depends on the band size or GROUP_SIZE.
__kernel __attribute__((reqd_work_group_size(GROUP_SIZE, 1, 1)))
void tips_backward_band(__global const float *x, __global const float *grad_y, __global const float *tau,
                        __global const float *grad_q, __global const float *target, __global const float *grad_psi,
                        __global const float *w1, __global float *grad_x, __global float *w1_partial, int planes,
                        int channels, int height, int width, int band_rows, int planes_per_group, int has_target,
                        float undo_scale, __local float *dz) {
    const int item = get_local_id(0);
    const int p = (KERNEL_SIZE - 1) / 2;
    const int ph = height & 1;
    const int pw = width & 1;
    const int hp = height + ph;
    const int wp = width + pw;
    const int stride = wp + 2 * p;
    const int bands = (hp + band_rows - 1) / band_rows;
    const int band = get_group_id(0) % bands;
    const int first_plane = get_group_id(0) / bands * planes_per_group;
    const int r0 = band * band_rows;
    const int r1 = min(r0 + band_rows, hp);
    const int dz_rows = r1 - r0 + 2 * p;
    const int lo = p + pw;
    const int hi = max(wp - p, lo);
    const int vectors = hi - lo >= 8 ? (hi - lo + 7) / 8 : 0;
    const int units = 1 + vectors;
    for (int plane = first_plane; plane < min(first_plane + planes_per_group, planes); ++plane) {
        __global const float *w = w1 + (plane % channels) * KERNEL_SIZE * KERNEL_SIZE;
        barrier(CLK_LOCAL_MEM_FENCE);  // the previous plane's dx has read dz
        // Loops of the same trip count for every item (the index guarded inside): with
        // `e = item; e < n; e += GROUP_SIZE` PoCL 3.1 ran this kernel's bodies past n.
        for (int base = 0; base < dz_rows * units; base += GROUP_SIZE) {
            const int e = min(base + item, dz_rows * units - 1);
            const bool active = base + item < dz_rows * units;
            const int row = e / units;
            const int unit = e - row * units;
            const int r = r0 - p + row;
            __local float *line = dz + row * stride + p;
            if (!active) {
            } else if (r < 0 || r >= hp) {
                if (unit == 0) {
                    for (int s = -p; s < wp + p; ++s) line[s] = 0.0f;
                }
            } else if (unit > 0) {
                const int start = lo + (unit - 1) * 8;
                const int s0 = min(start, hi - 8);
                const float8 psi = tips_psi_chunk(x, w, plane, r, s0, height, width);
                const float8 g = tips_dz_chunk(psi, grad_q, target, grad_psi, plane, r, s0, hp, wp, has_target, undo_scale);
                vstore8(g, 0, line + s0);
            } else {
                for (int s = 1; s <= p; ++s) {
                    line[-s] = 0.0f;
                    line[wp - 1 + s] = 0.0f;
                }
                const int inner_end = vectors > 0 ? lo : wp;
                const int outer_start = vectors > 0 ? hi : wp;
                for (int index = 0; index < inner_end + wp - outer_start; ++index) {
                    const int s = index < inner_end ? index : outer_start + index - inner_end;
                    const float psi = tips_psi_at(x, w, plane, r, s, height, width);
                    const float g = tips_dz_at(psi, grad_q, target, grad_psi, plane, r, s, hp, wp, has_target, undo_scale);
                    line[s] = g;
                }
            }
        }
        barrier(CLK_LOCAL_MEM_FENCE);
        // (2) dx. Units of a row: chunks of 8 x' columns (the last one shifted to end at W'), or
        // one element-by-element unit when W' < 8.
        const int chunks = wp >= 8 ? (wp + 7) / 8 : 1;
        for (int base = 0; base < (r1 - r0) * chunks; base += GROUP_SIZE) {
            const int e = min(base + item, (r1 - r0) * chunks - 1);
            const bool active = base + item < (r1 - r0) * chunks;
            const int R = r0 + e / chunks;
            const int chunk = e - (R - r0) * chunks;
            __global float *out = grad_x + plane_offset(plane, R - ph, 0, height, width) - pw;
            const int start = chunk * 8;
            if (!active || (ph && R == 0)) {
                // The reflected row: folded into row 2.
            } else if (wp < 8) {
                for (int S = pw; S < wp; ++S) out[S] = tips_band_input_at(grad_y, tau, dz, w, plane, R, S, r0, hp, wp, ph, pw);
            } else {
                const int S0 = min(start, wp - 8);
                float8 g = tips_band_grad_chunk(grad_y, tau, dz, w, plane, R, S0, r0, hp, wp);
                if (ph && R == 2) g += tips_band_grad_chunk(grad_y, tau, dz, w, plane, 0, S0, r0, hp, wp);
                if (S0 == start && !(pw && S0 == 0)) {
                    vstore8(g, 0, out + S0);
                } else {
                    float lanes[8];
                    vstore8(g, 0, lanes);
                    if (pw && S0 == 0) lanes[2] += lanes[0];
                    for (int lane = 0; lane < 8; ++lane) {
                        const int S = S0 + lane;
                        if (S >= max(start, pw)) out[S] = lanes[lane];
                    }
                }
            }
        }
        // (3) d conv1 terms of the band's own rows, one (row, tap) per item and step, from dz in
        // local memory (the same body as the unfused tips_grad_w1_rows, hence the same bits).
        const int tasks = (r1 - r0) * KERNEL_SIZE * KERNEL_SIZE;
        for (int base = 0; base < tasks; base += GROUP_SIZE) {
            const int e = min(base + item, tasks - 1);
            const int r = r0 + e / (KERNEL_SIZE * KERNEL_SIZE);
            const int t = e - (r - r0) * KERNEL_SIZE * KERNEL_SIZE;
            if (base + item < tasks) {
                w1_partial[(plane * hp + r) * KERNEL_SIZE * KERNEL_SIZE + t] =
                    tips_w1_row_local(x, dz + (r - r0 + p) * stride + p, plane, r, t, height, width);
            }
        }
    }
}

// d conv1 = the row terms of tips_backward_band or tips_grad_w1_rows summed over n, then rows,
// and d conv2 = the planes' shares (tips_grad_tau) summed over n, each in that fixed order
// (`rows` = H'). Global (C * k * k); items below C also take d conv2 of channel `index`, which
// saves d conv2 a launch of its own.
__kernel void tips_grad_weights_sum(__global const float *w1_partial, __global const float *grad_w2_share,
                                    __global float *grad_w1, __global float *grad_w2, int batch, int channels,
                                    int rows) {
    const int index = get_global_id(0);
    if (index >= channels * KERNEL_SIZE * KERNEL_SIZE) return;
    if (index < channels) {
        float share = 0.0f;
        for (int n = 0; n < batch; ++n) share += grad_w2_share[n * channels + index];
        grad_w2[index] = share;
    }
    const int channel = index / (KERNEL_SIZE * KERNEL_SIZE);
    const int t = index - channel * KERNEL_SIZE * KERNEL_SIZE;
    float sum = 0.0f;
    for (int n = 0; n < batch; ++n) {
        for (int r = 0; r < rows; ++r)
            sum += w1_partial[((n * channels + channel) * rows + r) * KERNEL_SIZE * KERNEL_SIZE + t];
    }
    grad_w1[index] = sum;
}

__kernel void tips_losses(__global const float *psi, __global const float *tau, __global const float *target,
                          __global float *partial, int planes, int padded_height, int padded_width, int has_target) {
    const int plane = get_global_id(0);
    if (plane >= planes) return;
    float norm = 0.0f;
    for (int k = 0; k < 4; ++k) norm += tau[plane * 4 + k] * tau[plane * 4 + k];
    float undo = 0.0f;
    if (has_target) {
        const int count = padded_height * padded_width;
        for (int index = plane * count; index < (plane + 1) * count; ++index) {
            const float d = psi[index] - target[index];
            undo += d * d;
        }
    }
    partial[2 * plane] = 1.0f - sqrt(norm);
    partial[2 * plane + 1] = undo;
}
