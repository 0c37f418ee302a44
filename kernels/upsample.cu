/* Bilinear upsampling by an integer factor f, NCHW, half-pixel centres
 * (align_corners=False); mirrors minifcrn/ops/upsample.py.
 *
 * Conventions as in conv.cu: <name>_f32 / <name>_f64 export a template for
 * float / double; `int` scalars; 1-D launch with a grid-stride loop over a
 * 64-bit flat index; every thread gathers into the elements it alone writes.
 * Source positions are computed in double for both types, as in the Numba code.
 */

__device__ __forceinline__ long long first_index() { return (long long)blockIdx.x * blockDim.x + threadIdx.x; }
__device__ __forceinline__ long long grid_stride() { return (long long)blockDim.x * gridDim.x; }

/* The two input taps of output i along an axis of input length L, and the
 * weight a of the second:  t = max((i + 0.5)/f - 0.5, 0),  i0 = min(floor(t), L-1),
 * i1 = min(i0 + 1, L-1),  a = t - i0. */
struct Taps {
    int i0, i1;
    double a;
};

__device__ __forceinline__ Taps source_taps(int i, int f, int L)
{
    double t = (i + 0.5) / f - 0.5;
    if (t < 0) t = 0;
    Taps taps;
    taps.i0 = min((int)t, L - 1);
    taps.i1 = min(taps.i0 + 1, L - 1);
    taps.a = t - taps.i0;
    return taps;
}

/* Weight with which output i reads input p along one axis (0 when it does not). */
__device__ __forceinline__ double tap_weight(int i, int p, int f, int L)
{
    const Taps taps = source_taps(i, f, L);
    return (1 - taps.a) * (taps.i0 == p) + taps.a * (taps.i1 == p);
}

/* One thread per output element (n, c, i, j) of y (N, C, H*f, W*f):
 *   t = ((n*C + c)*HO + i)*WO + j,
 *   y[t] = (1-a)((1-b) x[i0, j0] + b x[i0, j1]) + a((1-b) x[i1, j0] + b x[i1, j1]). */
template <typename T>
__device__ void upsample_bilinear_forward(const T* __restrict__ x, int N, int C, int H, int W, int f,
                                          T* __restrict__ y)
{
    const int HO = H * f, WO = W * f;
    const long long total = (long long)N * C * HO * WO;
    for (long long t = first_index(); t < total; t += grid_stride()) {
        const int j = (int)(t % WO), i = (int)(t / WO % HO);
        const T* plane = x + t / ((long long)HO * WO) * H * W;  // x[n, c]
        const Taps row = source_taps(i, f, H), col = source_taps(j, f, W);
        const T a = (T)row.a, b = (T)col.a;
        y[t] = (1 - a) * ((1 - b) * plane[row.i0 * W + col.i0] + b * plane[row.i0 * W + col.i1])
             + a * ((1 - b) * plane[row.i1 * W + col.i0] + b * plane[row.i1 * W + col.i1]);
    }
}

/* The transpose of the forward map.  One thread per input element (n, c, p, q)
 * of dx (N, C, H, W):  t = ((n*C + c)*H + p)*W + q.
 * Only outputs i in [(p-1)f, (p+2)f) can read row p (the same for columns); the
 * thread sums w_i * w_j * dy[i, j] over them, i then j in order, as
 * _upsample_bilinear_backward_cpu does: a gather, deterministic, no atomics. */
template <typename T>
__device__ void upsample_bilinear_backward(const T* __restrict__ dy, int N, int C, int H, int W, int f,
                                           T* __restrict__ dx)
{
    const int HO = H * f, WO = W * f;
    const long long total = (long long)N * C * H * W;
    for (long long t = first_index(); t < total; t += grid_stride()) {
        const int q = (int)(t % W), p = (int)(t / W % H);
        const T* plane = dy + t / ((long long)H * W) * HO * WO;  // dy[n, c]
        T sum = 0;
        for (int i = max(0, (p - 1) * f); i < min(HO, (p + 2) * f); ++i) {
            const double wi = tap_weight(i, p, f, H);
            if (wi == 0) continue;
            for (int j = max(0, (q - 1) * f); j < min(WO, (q + 2) * f); ++j) {
                const double wj = tap_weight(j, q, f, W);
                if (wj != 0) sum += (T)(wi * wj) * plane[(long long)i * WO + j];
            }
        }
        dx[t] = sum;
    }
}

extern "C" __global__ void upsample_bilinear_forward_f32(const float* __restrict__ x, int N, int C, int H, int W,
                                                         int f, float* __restrict__ y)
{
    upsample_bilinear_forward<float>(x, N, C, H, W, f, y);
}

extern "C" __global__ void upsample_bilinear_forward_f64(const double* __restrict__ x, int N, int C, int H, int W,
                                                         int f, double* __restrict__ y)
{
    upsample_bilinear_forward<double>(x, N, C, H, W, f, y);
}

extern "C" __global__ void upsample_bilinear_backward_f32(const float* __restrict__ dy, int N, int C, int H, int W,
                                                          int f, float* __restrict__ dx)
{
    upsample_bilinear_backward<float>(dy, N, C, H, W, f, dx);
}

extern "C" __global__ void upsample_bilinear_backward_f64(const double* __restrict__ dy, int N, int C, int H, int W,
                                                          int f, double* __restrict__ dx)
{
    upsample_bilinear_backward<double>(dy, N, C, H, W, f, dx);
}
