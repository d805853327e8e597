// Bandwidth baseline: y = x, one float4 per work item. Benchmarks measure it on the same device
// and buffer sizes as the operators, which gives the practical memory roofline (bytes moved per
// second of a kernel that does nothing else).
//
// Work-item mapping: global 0 = float4 index, count = ceil(n / 4); the tail is copied scalar.
#include "common.h"

__kernel void copy_float4(__global const float *x, __global float *y, int count) {
    int index = get_global_id(0);
    int first = index * 4;
    if (first + 3 < count) {
        vstore4(vload4(index, x), index, y);
    } else {
        for (int i = first; i < count; ++i) y[i] = x[i];
    }
}

// Does nothing: the benchmarks' launch floor (one launch of one work item and a wait for it),
// the least any operator call can cost on a device.
__kernel void empty_kernel(void) {}
