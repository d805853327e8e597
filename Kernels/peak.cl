// Multiply-add peak probe: the device's practical arithmetic roofline, measured the same way as
// the operators (profiling events, same queue), so that compute-bound kernels (AdaptiveBlurPool's
// predictor) can be reported as a fraction of what the hardware really sustains.
//
// Each work item runs CHAINS independent multiply-add chains on VECTOR_WIDTH-wide vectors, so
// that the chains hide the FMA latency and the vector width fills the SIMD lanes; x = x * m + a
// with m < 1 converges to a / (1 - m) and never overflows or turns denormal. The chain values
// are summed and stored, so the compiler cannot drop any of the work.
//
// Work-item mapping: global 0 = independent work items (any count); y[get_global_id(0)] receives
// the lane sum of that work item. FLOPs per work item = 2 * VECTOR_WIDTH * CHAINS * iterations.
//
// Defines: VECTOR_WIDTH (4 or 8), CHAINS (1..8).
#include "common.h"

#if VECTOR_WIDTH == 8
typedef float8 peak_vector;
#define PEAK_LANE_SUM(v) ((v).s0 + (v).s1 + (v).s2 + (v).s3 + (v).s4 + (v).s5 + (v).s6 + (v).s7)
#else
typedef float4 peak_vector;
#define PEAK_LANE_SUM(v) ((v).s0 + (v).s1 + (v).s2 + (v).s3)
#endif

__kernel void peak_multiply_add(__global float *y, int iterations, float multiplier, float addend) {
    int index = get_global_id(0);
    peak_vector m = (peak_vector)(multiplier);
    peak_vector a = (peak_vector)(addend);
    // Distinct starting values per chain and work item, so no two chains are provably equal.
    peak_vector x0 = (peak_vector)((float)index * 1e-6f);
    peak_vector x1 = x0 + 0.1f, x2 = x0 + 0.2f, x3 = x0 + 0.3f;
    peak_vector x4 = x0 + 0.4f, x5 = x0 + 0.5f, x6 = x0 + 0.6f, x7 = x0 + 0.7f;
    for (int i = 0; i < iterations; ++i) {
        x0 = fma(x0, m, a);
#if CHAINS > 1
        x1 = fma(x1, m, a);
#endif
#if CHAINS > 2
        x2 = fma(x2, m, a);
#endif
#if CHAINS > 3
        x3 = fma(x3, m, a);
#endif
#if CHAINS > 4
        x4 = fma(x4, m, a);
#endif
#if CHAINS > 5
        x5 = fma(x5, m, a);
#endif
#if CHAINS > 6
        x6 = fma(x6, m, a);
#endif
#if CHAINS > 7
        x7 = fma(x7, m, a);
#endif
    }
    peak_vector sum = x0;
#if CHAINS > 1
    sum += x1;
#endif
#if CHAINS > 2
    sum += x2;
#endif
#if CHAINS > 3
    sum += x3;
#endif
#if CHAINS > 4
    sum += x4;
#endif
#if CHAINS > 5
    sum += x5;
#endif
#if CHAINS > 6
    sum += x6;
#endif
#if CHAINS > 7
    sum += x7;
#endif
    y[index] = PEAK_LANE_SUM(sum);
}
