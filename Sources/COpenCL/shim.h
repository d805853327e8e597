// Pins the OpenCL API to 1.2, the portable floor (NVIDIA, AMD, Intel, PoCL, Apple all provide it),
// so that nothing newer is used by accident.
#ifndef NYQUIST_COPENCL_SHIM_H
#define NYQUIST_COPENCL_SHIM_H
#define CL_TARGET_OPENCL_VERSION 120
#define CL_USE_DEPRECATED_OPENCL_1_2_APIS
#include <CL/cl.h>
#endif
