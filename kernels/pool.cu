/* 2-D max pooling, NCHW; mirrors minifcrn/ops/pool.py.
 *
 * Conventions as in conv.cu: <name>_f32 / <name>_f64 export a template for
 * float / double; `int` scalars; 1-D launch with a grid-stride loop over a
 * 64-bit flat index; every thread gathers into the elements it alone writes.
 */

__device__ __forceinline__ long long first_index() { return (long long)blockIdx.x * blockDim.x + threadIdx.x; }
__device__ __forceinline__ long long grid_stride() { return (long long)blockDim.x * gridDim.x; }

/* One thread per output element (n, c, i, j):  t = ((n*C + c)*HO + i)*WO + j.
 * It scans the window rows s*i .. s*i+k-1, columns s*j .. s*j+k-1 row by row,
 * left to right; a value replaces the best so far only when strictly greater
 * (the first maximum wins ties) or when it is NaN and the best is not (NaN
 * wins).  Writes y[t] and argmax[t] = y_in*W + x_in, the flat index of the
 * winner in its (H, W) plane. */
template <typename T>
__device__ void max_pool2d_forward(const T* __restrict__ x, int N, int C, int H, int W, int k, int s,
                                   int HO, int WO, T* __restrict__ y, int* __restrict__ argmax)
{
    const long long total = (long long)N * C * HO * WO;
    for (long long t = first_index(); t < total; t += grid_stride()) {
        const int j = (int)(t % WO), i = (int)(t / WO % HO);
        const T* plane = x + t / ((long long)HO * WO) * H * W;  // x[n, c]
        int where = (i * s) * W + j * s;
        T best = plane[where];
        for (int u = 0; u < k; ++u) {
            for (int v = 0; v < k; ++v) {
                const int p = (i * s + u) * W + (j * s + v);
                const T val = plane[p];
                if (val > best || (isnan(val) && !isnan(best))) {
                    best = val;
                    where = p;
                }
            }
        }
        y[t] = best;
        argmax[t] = where;
    }
}

/* One thread per input element (n, c, p, q):  t = ((n*C + c)*H + p)*W + q.
 * The windows holding row p are i = ceil((p - k + 1) / s) .. floor(p / s),
 * i.e. (p - k + s) / s .. p / s, clipped to [0, HO) (C's division truncates
 * toward zero, which after the max(0, .) equals Python's floor).  The thread
 * sums dy over those windows (i, j) whose argmax is (p, q): a gather, so
 * overlapping windows (s < k) need no atomics. */
template <typename T>
__device__ void max_pool2d_backward(const T* __restrict__ dy, const int* __restrict__ argmax, int N, int C,
                                    int H, int W, int k, int s, int HO, int WO, T* __restrict__ dx)
{
    const long long total = (long long)N * C * H * W;
    for (long long t = first_index(); t < total; t += grid_stride()) {
        const int q = (int)(t % W), p = (int)(t / W % H);
        const long long plane = t / ((long long)H * W) * HO * WO;  // offset of dy[n, c] and argmax[n, c]
        const int i_lo = max(0, (p - k + s) / s), i_hi = min(HO - 1, p / s);
        const int j_lo = max(0, (q - k + s) / s), j_hi = min(WO - 1, q / s);
        T sum = 0;
        for (int i = i_lo; i <= i_hi; ++i) {
            for (int j = j_lo; j <= j_hi; ++j) {
                if (argmax[plane + i * WO + j] == p * W + q) sum += dy[plane + i * WO + j];
            }
        }
        dx[t] = sum;
    }
}

extern "C" __global__ void max_pool2d_forward_f32(const float* __restrict__ x, int N, int C, int H, int W, int k,
                                                  int s, int HO, int WO, float* __restrict__ y,
                                                  int* __restrict__ argmax)
{
    max_pool2d_forward<float>(x, N, C, H, W, k, s, HO, WO, y, argmax);
}

extern "C" __global__ void max_pool2d_forward_f64(const double* __restrict__ x, int N, int C, int H, int W, int k,
                                                  int s, int HO, int WO, double* __restrict__ y,
                                                  int* __restrict__ argmax)
{
    max_pool2d_forward<double>(x, N, C, H, W, k, s, HO, WO, y, argmax);
}

extern "C" __global__ void max_pool2d_backward_f32(const float* __restrict__ dy, const int* __restrict__ argmax,
                                                   int N, int C, int H, int W, int k, int s, int HO, int WO,
                                                   float* __restrict__ dx)
{
    max_pool2d_backward<float>(dy, argmax, N, C, H, W, k, s, HO, WO, dx);
}

extern "C" __global__ void max_pool2d_backward_f64(const double* __restrict__ dy, const int* __restrict__ argmax,
                                                   int N, int C, int H, int W, int k, int s, int HO, int WO,
                                                   double* __restrict__ dx)
{
    max_pool2d_backward<double>(dy, argmax, N, C, H, W, k, s, HO, WO, dx);
}
