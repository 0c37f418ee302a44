/* im2col and col2im for 2-D convolution, NCHW; mirrors minifcrn/ops/conv.py.
 *
 * Conventions shared by every file in kernels/:
 *  - Naming: each kernel is a __device__ template written once and exported twice,
 *    as extern "C" <name>_f32 (T = float) and <name>_f64 (T = double), so that
 *    CuPy's RawModule and the CPU emulator (minifcrn/testing/emulator.py) find
 *    it by a plain, unmangled name.
 *  - Arguments: input arrays, then sizes and scalars, then the arrays written.
 *    Integer scalars are `int` (pass numpy.int32); products of sizes that could
 *    pass 2^31 are formed in long long.
 *  - Launch: a 1-D grid of 1-D blocks of any size.  Each kernel walks its
 *    outputs with a grid-stride loop over a 64-bit flat index t, so one launch
 *    covers any number of elements.
 *  - Every thread computes whole output elements and is the only writer of
 *    them: kernels gather, never scatter, so results are deterministic.
 */

__device__ __forceinline__ long long first_index() { return (long long)blockIdx.x * blockDim.x + threadIdx.x; }
__device__ __forceinline__ long long grid_stride() { return (long long)blockDim.x * gridDim.x; }

/* One thread per element of cols (C*KH*KW rows, N*HO*WO columns), row-major:
 *   t = row * (N*HO*WO) + col,  row = (c*KH + u)*KW + v,  col = (n*HO + i)*WO + j,
 *   cols[t] = x[n, c, i*stride - padding + u, j*stride - padding + v]  (0 outside x).
 * A pure gather (a copy): deterministic. */
template <typename T>
__device__ void im2col(const T* __restrict__ x, int N, int C, int H, int W, int KH, int KW,
                       int stride, int padding, int HO, int WO, T* __restrict__ cols)
{
    const long long ncols = (long long)N * HO * WO;
    const long long total = (long long)C * KH * KW * ncols;
    for (long long t = first_index(); t < total; t += grid_stride()) {
        const long long row = t / ncols, col = t % ncols;
        const int c = (int)(row / (KH * KW)), u = (int)(row / KW % KH), v = (int)(row % KW);
        const int n = (int)(col / (HO * WO)), i = (int)(col / WO % HO), j = (int)(col % WO);
        const int iy = i * stride - padding + u, ix = j * stride - padding + v;
        const bool inside = 0 <= iy && iy < H && 0 <= ix && ix < W;
        cols[t] = inside ? x[(((long long)n * C + c) * H + iy) * W + ix] : T(0);
    }
}

/* The adjoint of im2col.  One thread per element of dx (N, C, H, W):
 *   t = ((n*C + c)*H + y)*W + x.
 * Pixel (y, x) was copied by tap (u, v) into output position (i, j) when
 * y = i*stride - padding + u, i.e. i = (y + padding - u) / stride must be a whole
 * number in [0, HO) (and the same for x, v, j).  The thread gathers those column
 * entries, u then v in order, as _col2im_cpu does: deterministic, no atomics. */
template <typename T>
__device__ void col2im(const T* __restrict__ cols, int N, int C, int H, int W, int KH, int KW,
                       int stride, int padding, int HO, int WO, T* __restrict__ dx)
{
    const long long ncols = (long long)N * HO * WO;
    const long long total = (long long)N * C * H * W;
    for (long long t = first_index(); t < total; t += grid_stride()) {
        const int x = (int)(t % W), y = (int)(t / W % H), c = (int)(t / ((long long)H * W) % C);
        const int n = (int)(t / ((long long)C * H * W));
        T sum = 0;
        for (int u = 0; u < KH; ++u) {
            const int ty = y + padding - u;
            if (ty < 0 || ty % stride != 0 || ty / stride >= HO) continue;
            const int i = ty / stride;
            for (int v = 0; v < KW; ++v) {
                const int tx = x + padding - v;
                if (tx < 0 || tx % stride != 0 || tx / stride >= WO) continue;
                const int j = tx / stride;
                sum += cols[((long long)(c * KH + u) * KW + v) * ncols + ((long long)n * HO + i) * WO + j];
            }
        }
        dx[t] = sum;
    }
}

extern "C" __global__ void im2col_f32(const float* __restrict__ x, int N, int C, int H, int W, int KH, int KW,
                                      int stride, int padding, int HO, int WO, float* __restrict__ cols)
{
    im2col<float>(x, N, C, H, W, KH, KW, stride, padding, HO, WO, cols);
}

extern "C" __global__ void im2col_f64(const double* __restrict__ x, int N, int C, int H, int W, int KH, int KW,
                                      int stride, int padding, int HO, int WO, double* __restrict__ cols)
{
    im2col<double>(x, N, C, H, W, KH, KW, stride, padding, HO, WO, cols);
}

extern "C" __global__ void col2im_f32(const float* __restrict__ cols, int N, int C, int H, int W, int KH, int KW,
                                      int stride, int padding, int HO, int WO, float* __restrict__ dx)
{
    col2im<float>(cols, N, C, H, W, KH, KW, stride, padding, HO, WO, dx);
}

extern "C" __global__ void col2im_f64(const double* __restrict__ cols, int N, int C, int H, int W, int KH, int KW,
                                      int stride, int padding, int HO, int WO, double* __restrict__ dx)
{
    col2im<double>(cols, N, C, H, W, KH, KW, stride, padding, HO, WO, dx);
}
