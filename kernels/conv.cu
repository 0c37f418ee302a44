/* im2col and col2im for 2-D convolution, NCHW; mirrors minifcrn/ops/conv.py.
 *
 * Conventions shared by every file in kernels/:
 *  - Naming: each kernel is a __device__ template written once and exported twice,
 *    as extern "C" <name>_f32 (T = float) and <name>_f64 (T = double), so that
 *    CuPy's RawModule and the CPU emulator (minifcrn/backend/emulated.py) find
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

/* cols (C*KH*KW rows, N*HO*WO columns), row-major, holds x's receptive fields:
 *   cols[(c*KH + u)*KW + v, (n*HO + i)*WO + j] = x[n, c, i*stride - padding + u, j*stride - padding + v]
 * (0 outside x).  One thread per (c, column), t = c * (N*HO*WO) + col: it finds (c, n, i, j)
 * by a few divisions, then copies its KH*KW taps with none (integer division is the costly
 * part of a gather on a GPU); neighbouring threads write neighbouring columns of each row.
 * A pure gather (a copy): deterministic. */
template <typename T>
__device__ void im2col(const T* __restrict__ x, int N, int C, int H, int W, int KH, int KW,
                       int stride, int padding, int HO, int WO, T* __restrict__ cols)
{
    const long long ncols = (long long)N * HO * WO;
    const long long total = (long long)C * ncols;
    for (long long t = first_index(); t < total; t += grid_stride()) {
        const int c = (int)(t / ncols);
        const long long col = t - c * ncols, ni = col / WO;  // ni = n*HO + i
        const int j = (int)(col - ni * WO), n = (int)(ni / HO), i = (int)(ni - (long long)n * HO);
        const T* plane = x + ((long long)n * C + c) * H * W;
        T* out = cols + (long long)c * KH * KW * ncols + col;
        for (int u = 0; u < KH; ++u) {
            const int iy = i * stride - padding + u;
            for (int v = 0; v < KW; ++v, out += ncols) {
                const int ix = j * stride - padding + v;
                *out = (0 <= iy && iy < H && 0 <= ix && ix < W) ? plane[(long long)iy * W + ix] : T(0);
            }
        }
    }
}

/* The adjoint of im2col.  One thread per element of dx (N, C, H, W):
 *   t = ((n*C + c)*H + y)*W + x.
 * Pixel (y, x) was copied by tap (u, v) into output position (i, j) when
 * y = i*stride - padding + u, i.e. u = y + padding - i*stride: the taps u that are
 * congruent to y + padding modulo stride, each with i one less than the last, while
 * 0 <= i < HO (and the same for x, v, j).  The thread gathers those column entries,
 * u then v in order, as _col2im_cpu does: deterministic, no atomics. */
template <typename T>
__device__ void col2im(const T* __restrict__ cols, int N, int C, int H, int W, int KH, int KW,
                       int stride, int padding, int HO, int WO, T* __restrict__ dx)
{
    const long long ncols = (long long)N * HO * WO, hw = (long long)H * W;
    const long long total = (long long)N * C * hw;
    for (long long t = first_index(); t < total; t += grid_stride()) {
        const long long nc = t / hw, pixel = t - nc * hw;
        const int y = (int)(pixel / W), x = (int)(pixel - (long long)y * W);
        const int n = (int)(nc / C), c = (int)(nc - (long long)n * C);
        const int ry = y + padding, rx = x + padding;
        T sum = 0;
        for (int u = ry % stride, i = ry / stride; u < KH && i >= 0; u += stride, --i) {
            if (i >= HO) continue;
            for (int v = rx % stride, j = rx / stride; v < KW && j >= 0; v += stride, --j) {
                if (j >= WO) continue;
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
