/* Elementwise kernels: ReLU (minifcrn/ops/relu.py), the partial sums of the
 * squared error (minifcrn/ops/loss.py) and the momentum SGD step of the paper's
 * eq. 3 (minifcrn/optim.py).  (The conv's bias needs no pass of its own to fuse
 * with the ReLU: it is added in the pass that lays the product out as NCHW.)
 *
 * Conventions as in conv.cu: <name>_f32 / <name>_f64 export a template for
 * float / double; `int` scalars; 1-D launch with a grid-stride loop over a
 * 64-bit flat index; every thread writes only its own elements.
 */

__device__ __forceinline__ long long first_index() { return (long long)blockIdx.x * blockDim.x + threadIdx.x; }
__device__ __forceinline__ long long grid_stride() { return (long long)blockDim.x * gridDim.x; }

/* ReLU as NumPy's maximum(x, 0): NaN stays NaN, -0 becomes +0.  (A NaN's payload may not: for
 * float32 an H200 returned the canonical NaN 0x7fffffff, as a NaN-propagating max instruction does.) */
template <typename T>
__device__ __forceinline__ T relu(T v) { return (v > 0 || v != v) ? v : T(0); }

/* One thread per element t of n:  y[t] = relu(x[t]). */
template <typename T>
__device__ void relu_forward(const T* __restrict__ x, int n, T* __restrict__ y)
{
    for (long long t = first_index(); t < n; t += grid_stride()) y[t] = relu(x[t]);
}

/* One thread per element t of n:  dx[t] = dy[t] * [y[t] > 0]  (a product, as NumPy's
 * gy * (y > 0), so a NaN or inf in dy behaves the same). */
template <typename T>
__device__ void relu_backward(const T* __restrict__ dy, const T* __restrict__ y, int n, T* __restrict__ dx)
{
    for (long long t = first_index(); t < n; t += grid_stride()) dx[t] = dy[t] * (T)(y[t] > 0);
}

/* Partial sums of the squared error d = p - q over n elements.  One thread per
 * partial r in [0, parts):  partial[r] = sum over e = r, r + parts, r + 2*parts, ... < n
 * of d[e]^2, added in that order.  The caller sums the `parts` partials; for a
 * fixed `parts` the result is the same run after run (no atomics). */
template <typename T>
__device__ void mse_forward(const T* __restrict__ p, const T* __restrict__ q, int n, int parts,
                            T* __restrict__ partial)
{
    for (long long r = first_index(); r < parts; r += grid_stride()) {
        T sum = 0;
        for (long long e = r; e < n; e += parts) {
            const T d = p[e] - q[e];
            sum += d * d;
        }
        partial[r] = sum;
    }
}

/* Momentum SGD, eq. 3, one thread per parameter element t of n:
 *   delta[t] = beta * delta[t] + (1 - beta) * lr * (g[t] + wd * w[t]);   w[t] -= delta[t]
 * (the wd * w term is skipped when wd == 0, as optim.SGD does). */
template <typename T>
__device__ void sgd_update(const T* __restrict__ g, T beta, T lr, T wd, int n, T* __restrict__ w,
                           T* __restrict__ delta)
{
    for (long long t = first_index(); t < n; t += grid_stride()) {
        const T step = wd != 0 ? g[t] + wd * w[t] : g[t];
        const T d = beta * delta[t] + ((1 - beta) * lr) * step;
        delta[t] = d;
        w[t] -= d;
    }
}

extern "C" __global__ void relu_forward_f32(const float* __restrict__ x, int n, float* __restrict__ y)
{
    relu_forward<float>(x, n, y);
}

extern "C" __global__ void relu_forward_f64(const double* __restrict__ x, int n, double* __restrict__ y)
{
    relu_forward<double>(x, n, y);
}

extern "C" __global__ void relu_backward_f32(const float* __restrict__ dy, const float* __restrict__ y, int n,
                                             float* __restrict__ dx)
{
    relu_backward<float>(dy, y, n, dx);
}

extern "C" __global__ void relu_backward_f64(const double* __restrict__ dy, const double* __restrict__ y, int n,
                                             double* __restrict__ dx)
{
    relu_backward<double>(dy, y, n, dx);
}

extern "C" __global__ void mse_forward_f32(const float* __restrict__ p, const float* __restrict__ q, int n,
                                           int parts, float* __restrict__ partial)
{
    mse_forward<float>(p, q, n, parts, partial);
}

extern "C" __global__ void mse_forward_f64(const double* __restrict__ p, const double* __restrict__ q, int n,
                                           int parts, double* __restrict__ partial)
{
    mse_forward<double>(p, q, n, parts, partial);
}

extern "C" __global__ void sgd_update_f32(const float* __restrict__ g, float beta, float lr, float wd, int n,
                                          float* __restrict__ w, float* __restrict__ delta)
{
    sgd_update<float>(g, beta, lr, wd, n, w, delta);
}

extern "C" __global__ void sgd_update_f64(const double* __restrict__ g, double beta, double lr, double wd, int n,
                                          double* __restrict__ w, double* __restrict__ delta)
{
    sgd_update<double>(g, beta, lr, wd, n, w, delta);
}
