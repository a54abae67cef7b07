// Reads a frame from an imported VkImage (explicit DRM-modifier layout) with imageLoad.
// Packed formats (XR24 & co., and YUYV/UYVY as width/2 texels) are one RGBA8_UINT image;
// NV12 (compiled with PLANES_NV12 defined) is an R8_UINT luma view and an R8G8_UINT chroma view.
// RG24 has no 3-byte storage format and always takes the buffer path.

#ifdef PLANES_NV12
layout(set = 0, binding = 2, r8ui) uniform readonly uimage2D luma;
layout(set = 0, binding = 3, rg8ui) uniform readonly uimage2D chroma;
#else
layout(set = 0, binding = 2, rgba8ui) uniform readonly uimage2D pix;
#endif

#ifdef PLANES_NV12
uint word_luma(uint i, uint y) {
    uint w = 0u;
    for (uint k = 0u; k < 4u; k++) {
        uint x = 4u * i + k;
        if (x < pc.width) {
            w |= imageLoad(luma, ivec2(int(x), int(y))).r << (8u * k);
        }
    }
    return w;
}

uint word_chroma(uint i, uint y) {
    uint w = 0u;
    for (uint k = 0u; k < 2u; k++) {
        uint x = 2u * i + k;
        if (x < pc.width / 2u) {
            uvec4 t = imageLoad(chroma, ivec2(int(x), int(y)));
            w |= (t.r | (t.g << 8u)) << (16u * k);
        }
    }
    return w;
}
#else
uint word_packed(uint i, uint y) {
    uvec4 t = imageLoad(pix, ivec2(int(i), int(y)));
    return t.r | (t.g << 8u) | (t.b << 16u) | (t.a << 24u);
}
#endif

void main() {
    uint lid = gl_LocalInvocationID.x;
    uint y = gl_WorkGroupID.y;
    uint nwords = (pc.rowbytes0 + 3u) / 4u;
    uint s = 0u;
    for (uint i = lid; i < nwords; i += 64u) {
#ifdef PLANES_NV12
        s += (2u * i + 1u) * word_luma(i, y);
#else
        s += (2u * i + 1u) * word_packed(i, y);
#endif
    }
    store_row_sum(lid, y, s);

#ifdef PLANES_NV12
    if (y < pc.rows1) {
        uint nwords1 = (pc.rowbytes1 + 3u) / 4u;
        uint s1 = 0u;
        for (uint i = lid; i < nwords1; i += 64u) {
            s1 += (2u * i + 1u) * word_chroma(i, y);
        }
        store_row_sum(lid, pc.rows0 + y, s1);
    }
#endif

    if (pc.convert == 0u) {
        return;
    }
    for (uint x = lid; x < pc.width; x += 64u) {
        uint o;
#ifdef PLANES_NV12
        uint yv = imageLoad(luma, ivec2(int(x), int(y))).r;
        uvec4 c = imageLoad(chroma, ivec2(int(x >> 1u), int(y >> 1u)));
        o = yuv_rgba(yv, c.r, c.g);
#else
        if (pc.format == FMT_YUYV || pc.format == FMT_UYVY) {
            uvec4 t = imageLoad(pix, ivec2(int(x >> 1u), int(y)));
            if (pc.format == FMT_YUYV) {
                o = yuv_rgba((x & 1u) == 0u ? t.r : t.b, t.g, t.a);
            } else {
                o = yuv_rgba((x & 1u) == 0u ? t.g : t.a, t.r, t.b);
            }
        } else {
            uvec4 t = imageLoad(pix, ivec2(int(x), int(y)));
            if (pc.format == FMT_BGRX) {
                o = t.b | (t.g << 8u) | (t.r << 16u) | 0xff000000u;
            } else {
                o = t.r | (t.g << 8u) | (t.b << 16u) | 0xff000000u;
            }
        }
#endif
        store_px(x, y, o);
    }
}
