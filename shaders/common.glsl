// Shared by every frameshare compute shader (build.rs prepends it; naga's GLSL front end has no
// #include). One workgroup of 64 invocations handles one image row `y`:
//   * it checksums row y of plane 0 and, if plane 1 (plane 2) has a row y, row y of plane 1
//     (plane 2);
//   * it converts image row y to RGBA8 (pc.convert == 1: tightly packed rows) or to XR24
//     (pc.convert == 2: bytes B G R X, rows pc.out_stride words apart from word pc.out_offset,
//     for a display buffer bound as `rgba`).
//
// Checksum definition (the CPU side is src/sink/vulkan/checksum.rs, which must agree):
//   word(p, r, i) = little-endian u32 of bytes [4i, 4i+4) of the visible bytes of row r of plane
//                   p (width * bytes-per-pixel, stride padding excluded), zero-padded past the end;
//   row_sum(p, r) = sum over i of (2i + 1) * word(p, r, i)                  (wrapping u32);
//   g(p, r)       = r for plane 0, rows(plane 0) + r for plane 1, rows(0) + rows(1) + r for
//                   plane 2                                                 (global row index);
//   checksum      = sum over (p, r) of (2 g(p, r) + 1) * row_sum(p, r)     (wrapping u32).
// Odd weights make every single-byte change visible; position weights catch moved words and rows.

#define FMT_BGRX 0u // XR24, AR24: bytes B G R X
#define FMT_RGBX 1u // XB24, AB24: bytes R G B X
#define FMT_BGR 2u  // RG24: bytes B G R
#define FMT_YUYV 3u
#define FMT_UYVY 4u
#define FMT_NV12 5u
#define FMT_NV21 6u // NV12 with V before U
#define FMT_NV16 7u // NV12 with a chroma row per image row (4:2:2)
#define FMT_P010 8u // NV12 with 16-bit little-endian samples, the top 8 bits read
#define FMT_YU12 9u // I420: Y, U, V planes; U and V in plane 1's memory (binding 1)

layout(local_size_x = 64, local_size_y = 1, local_size_z = 1) in;

layout(push_constant) uniform Params {
    uint format;
    uint width;
    uint height;
    uint convert;
    uint offset0;   // byte offset of plane 0 in its binding (buffer path)
    uint stride0;   // bytes from row to row
    uint offset1;
    uint stride1;
    uint rowbytes0; // visible bytes per row
    uint rowbytes1;
    uint rows1;     // rows of plane 1 (0: no plane 1)
    uint rows0;
    uint words0;    // u32 words in binding 0 / 1 (buffer path)
    uint words1;
    uint out_offset; // convert == 2: first word of the output frame in binding 4
    uint out_stride; // convert == 2: words from output row to output row
    uint offset2;   // plane 2 (YU12's V), in binding 1
    uint stride2;
    uint rowbytes2;
    uint rows2;     // rows of plane 2 (0: no plane 2)
} pc;

layout(std430, set = 0, binding = 4) buffer Rgba { uint px[]; } rgba;
layout(std430, set = 0, binding = 5) buffer RowSums { uint sums[]; } rowsums;

shared uint partial[64];

// Stores converted pixel (x, y), given as RGBA8 (R in the low byte).
void store_px(uint x, uint y, uint o) {
    if (pc.convert == 2u) {
        uint bgrx = (o & 0xff00ff00u) | ((o & 0xffu) << 16u) | ((o >> 16u) & 0xffu);
        rgba.px[pc.out_offset + y * pc.out_stride + x] = bgrx;
    } else {
        rgba.px[y * pc.width + x] = o;
    }
}

uint clamp8(int v) {
    return uint(clamp((v + 128) >> 8, 0, 255));
}

// BT.601 limited range, integer, exactly as the CPU PNG sink (src/sink/png.rs) does it.
uint yuv_rgba(uint y, uint u, uint v) {
    int c = (int(y) - 16) * 298;
    int d = int(u) - 128;
    int e = int(v) - 128;
    uint r = clamp8(c + 409 * e);
    uint g = clamp8(c - 100 * d - 208 * e);
    uint b = clamp8(c + 516 * d);
    return r | (g << 8u) | (b << 16u) | 0xff000000u;
}

// Zero-pads the bytes of a row's last word that lie past the row's visible bytes.
uint mask_tail(uint w, uint i, uint rowbytes) {
    uint have = rowbytes - 4u * i;
    if (have >= 4u) {
        return w;
    }
    return w & ((1u << (have * 8u)) - 1u);
}

// Adds up the 64 invocations' partial sums; invocation 0 stores the total for global row `g`.
void store_row_sum(uint lid, uint g, uint s) {
    partial[lid] = s;
    barrier();
    for (uint n = 32u; n > 0u; n = n >> 1u) {
        if (lid < n) {
            partial[lid] = partial[lid] + partial[lid + n];
        }
        barrier();
    }
    if (lid == 0u) {
        rowsums.sums[g] = partial[0];
    }
    barrier();
}
