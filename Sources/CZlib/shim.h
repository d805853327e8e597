// zlib for the PNG codec (NyquistImage): deflate for IDAT, inflate, and the CRC-32 of chunks.
#ifndef NYQUIST_CZLIB_SHIM_H
#define NYQUIST_CZLIB_SHIM_H
#include <zlib.h>

// inflateInit is a macro (it passes the header's version string and sizeof(z_stream), so that
// zlib can refuse a mismatched library); Swift cannot call macros, hence this wrapper.
static inline int nyquist_inflate_init(z_streamp stream) {
    return inflateInit(stream);
}
#endif
