// Folds the per-row sums into the frame checksum: sum over g of (2g + 1) * row_sum[g]
// (wrapping u32), for g < rows0 + rows1 + rows2. One workgroup.

layout(std430, set = 0, binding = 6) buffer Result { uint checksum; } result;

void main() {
    uint lid = gl_LocalInvocationID.x;
    uint n = pc.rows0 + pc.rows1 + pc.rows2;
    uint s = 0u;
    for (uint g = lid; g < n; g += 64u) {
        s += (2u * g + 1u) * rowsums.sums[g];
    }
    partial[lid] = s;
    barrier();
    for (uint k = 32u; k > 0u; k = k >> 1u) {
        if (lid < k) {
            partial[lid] = partial[lid] + partial[lid + k];
        }
        barrier();
    }
    if (lid == 0u) {
        result.checksum = partial[0];
    }
}
