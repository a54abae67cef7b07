// Reads a frame from linear memory bound as storage buffers (an imported dma-buf or host
// mapping, or a staging copy), plane by plane at pc.offsetN + row * pc.strideN.

layout(std430, set = 0, binding = 0) readonly buffer Src0 { uint words[]; } src0;
layout(std430, set = 0, binding = 1) readonly buffer Src1 { uint words[]; } src1;

// The little-endian u32 at byte address `a` of plane 0's memory (any alignment).
uint load0(uint a) {
    uint w = a >> 2u;
    uint s = (a & 3u) * 8u;
    uint lo = src0.words[w];
    if (s == 0u) {
        return lo;
    }
    uint hi = 0u;
    if (w + 1u < pc.words0) {
        hi = src0.words[w + 1u];
    }
    return (lo >> s) | (hi << (32u - s));
}

uint load1(uint a) {
    uint w = a >> 2u;
    uint s = (a & 3u) * 8u;
    uint lo = src1.words[w];
    if (s == 0u) {
        return lo;
    }
    uint hi = 0u;
    if (w + 1u < pc.words1) {
        hi = src1.words[w + 1u];
    }
    return (lo >> s) | (hi << (32u - s));
}

uint byte0(uint a) {
    return (src0.words[a >> 2u] >> ((a & 3u) * 8u)) & 0xffu;
}

uint byte1(uint a) {
    return (src1.words[a >> 2u] >> ((a & 3u) * 8u)) & 0xffu;
}

void main() {
    uint lid = gl_LocalInvocationID.x;
    uint y = gl_WorkGroupID.y;

    // Checksum of row y of plane 0.
    uint base = pc.offset0 + y * pc.stride0;
    uint nwords = (pc.rowbytes0 + 3u) / 4u;
    uint s = 0u;
    for (uint i = lid; i < nwords; i += 64u) {
        s += (2u * i + 1u) * mask_tail(load0(base + 4u * i), i, pc.rowbytes0);
    }
    store_row_sum(lid, y, s);

    // Checksum of row y of plane 1.
    if (y < pc.rows1) {
        uint base1 = pc.offset1 + y * pc.stride1;
        uint nwords1 = (pc.rowbytes1 + 3u) / 4u;
        uint s1 = 0u;
        for (uint i = lid; i < nwords1; i += 64u) {
            s1 += (2u * i + 1u) * mask_tail(load1(base1 + 4u * i), i, pc.rowbytes1);
        }
        store_row_sum(lid, pc.rows0 + y, s1);
    }

    // Checksum of row y of plane 2 (YU12's V plane, in plane 1's memory).
    if (y < pc.rows2) {
        uint base2 = pc.offset2 + y * pc.stride2;
        uint nwords2 = (pc.rowbytes2 + 3u) / 4u;
        uint s2 = 0u;
        for (uint i = lid; i < nwords2; i += 64u) {
            s2 += (2u * i + 1u) * mask_tail(load1(base2 + 4u * i), i, pc.rowbytes2);
        }
        store_row_sum(lid, pc.rows0 + pc.rows1 + y, s2);
    }

    if (pc.convert == 0u) {
        return;
    }
    for (uint x = lid; x < pc.width; x += 64u) {
        uint o;
        if (pc.format == FMT_BGRX) {
            uint w = src0.words[(base + 4u * x) >> 2u];
            o = ((w >> 16u) & 0xffu) | (w & 0xff00u) | ((w & 0xffu) << 16u) | 0xff000000u;
        } else if (pc.format == FMT_RGBX) {
            o = src0.words[(base + 4u * x) >> 2u] | 0xff000000u;
        } else if (pc.format == FMT_BGR) {
            uint a = base + 3u * x;
            o = byte0(a + 2u) | (byte0(a + 1u) << 8u) | (byte0(a) << 16u) | 0xff000000u;
        } else if (pc.format == FMT_YUYV || pc.format == FMT_UYVY) {
            uint w = load0(base + 4u * (x >> 1u));
            uint b0 = w & 0xffu;
            uint b1 = (w >> 8u) & 0xffu;
            uint b2 = (w >> 16u) & 0xffu;
            uint b3 = w >> 24u;
            if (pc.format == FMT_YUYV) {
                o = yuv_rgba((x & 1u) == 0u ? b0 : b2, b1, b3);
            } else {
                o = yuv_rgba((x & 1u) == 0u ? b1 : b3, b0, b2);
            }
        } else if (pc.format == FMT_P010) {
            uint yv = byte0(base + 2u * x + 1u);
            uint c = pc.offset1 + (y >> 1u) * pc.stride1 + 2u * (x & ~1u);
            o = yuv_rgba(yv, byte1(c + 1u), byte1(c + 3u));
        } else if (pc.format == FMT_YU12) {
            uint yv = byte0(base + x);
            uint u = byte1(pc.offset1 + (y >> 1u) * pc.stride1 + (x >> 1u));
            uint v = byte1(pc.offset2 + (y >> 1u) * pc.stride2 + (x >> 1u));
            o = yuv_rgba(yv, u, v);
        } else {
            // NV12, NV21, NV16: a luma plane and an interleaved chroma plane.
            uint yv = byte0(base + x);
            uint cy = pc.format == FMT_NV16 ? y : (y >> 1u);
            uint c = pc.offset1 + cy * pc.stride1 + (x & ~1u);
            if (pc.format == FMT_NV21) {
                o = yuv_rgba(yv, byte1(c + 1u), byte1(c));
            } else {
                o = yuv_rgba(yv, byte1(c), byte1(c + 1u));
            }
        }
        store_px(x, y, o);
    }
}
