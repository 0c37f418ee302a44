"""Bilinear x2 up-sampling fused with the 'same' convolution after it (FCRN's decoder).

    y = conv2d(up(x), w, b, padding=r),    x (N, C, H, W), w (O, C, k, k), k = 2r + 1 = 3 or 5
                                           -> y (N, O, 2H, 2W)

computed from x without building up(x).

Phases.  Along one axis up(x)[2i] = x[i-1]/4 + 3x[i]/4 and up(x)[2i+1] = 3x[i]/4 + x[i+1]/4
(borders clamp, as in ``upsample.py``).  So output row 2i + a (phase a = 0, 1) reads, through
the kernel's k rows, only q = r + 2 rows of x, i + a + d for d = lo .. lo + q - 1 (lo = -2 at
5x5, -1 at 3x3), with weights B_a (k x q, ``_phase_weights``).  In 2-D phase (a, b) is a q x q
convolution of x with

    K_ab = B_a^T w B_b                                   (per output and input channel)

(5x5: 16 taps per output instead of 25; 3x3: 9 as before, in products four times as wide).
The four phases are one 'valid' convolution, 4O output maps, of x extended by e = r pixels on
each side, phase (a, b) read off its output shifted by (a, b) at 5x5 (not shifted at 3x3):

    z = conv2d(E(x), K),    y[:, :, 2i+a, 2j+b] = z[:, (a, b), i + s_a, j + s_b] + b

The extension.  E(x) = [x[0], x ..., x[-1]] at 3x3 and [-3x[0], x[0], x ..., x[-1], -3x[-1]] at
5x5, along each axis.  Interpolating it by the formulas above gives up(x) inside (and 0 two
pixels out), but x[0] (x[-1]) one pixel out, where the convolution's zero padding should be.
So the ring one pixel out (rows -1 and 2H, columns -1 and 2W; call it v) is subtracted from the
r output lines next to it: at the top, for 5x5,

    y[:, :, 0] -= v_top * w[:, :, 1],    y[:, :, 1] -= v_top * w[:, :, 0]

(1-D k-tap convolutions along the edge; v_top is x's first row extended and interpolated) and
likewise at the other three edges (the ring's corners belong to the top and bottom rows).

Backward is each step's transpose: ``conv2d_backward`` for the convolutions, the adjoints of
E, of the interpolation and of the kernel mixing.  x, w and K are saved.  Everything is
array code on top of ``conv2d_forward``/``conv2d_backward``, so the CPU and the GPU share it.
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np

from minifcrn.autograd import Function
from minifcrn.backend import get_array_module
from minifcrn.ops.conv import check_conv2d_args, conv2d_backward, conv2d_forward

KERNELS = (3, 5)


@lru_cache(maxsize=None)
def _phase_weights(k):
    """(B, shifts): B (2, k, q), B[a, t, i] the weight of x row i_out + shifts[a] - r + i (E(x) row
    i_out + shifts[a] + i) in up(x) row 2 i_out + a + t - r, which kernel row t reads for output
    row 2 i_out + a."""
    r = k // 2
    rows = {}  # (a, t) -> [(d, weight)]: x row i_out + d
    for a in range(2):
        for t in range(k):
            p = a + t - r  # up(x) row 2 i_out + p
            half = p // 2
            rows[a, t] = ((half - 1, 0.25), (half, 0.75)) if p % 2 == 0 else ((half, 0.75), (half + 1, 0.25))
    lows = [min(d for t in range(k) for d, _ in rows[a, t]) for a in range(2)]
    q = r + 2
    weights = np.zeros((2, k, q))
    for (a, t), pairs in rows.items():
        for d, weight in pairs:
            weights[a, t, d - lows[a]] += weight
    return weights, tuple(low + r for low in lows)


def _mixing(k, dtype, xp):
    """T (k*k, 4q^2): K_ab[i, j] = sum over (t, s) of w[t, s] T[(t, s), (a, b, i, j)], that is
    B_a[t, i] B_b[s, j]."""
    b, _ = _phase_weights(k)
    return xp.asarray(np.einsum("ati,bsj->tsabij", b, b).reshape(k * k, -1), dtype=dtype)


def phase_kernels(w):
    """K (4O, C, q, q), phases (a, b) outermost: K_ab = B_a^T w B_b, one product per phase
    written in place (a single product would need a transpose: 15x slower, 2026-12-03)."""
    xp = get_array_module(w)
    o, c, k, _ = w.shape
    mixing = _mixing(k, w.dtype, xp)
    taps = mixing.shape[1] // 4
    out = xp.empty((4, o * c, taps), dtype=w.dtype)
    for phase in range(4):
        xp.matmul(w.reshape(o * c, k * k), mixing[:, taps * phase:taps * (phase + 1)], out=out[phase])
    q = k // 2 + 2
    return out.reshape(4 * o, c, q, q)


def phase_kernels_adjoint(gk, w_shape):
    """gw = sum over (a, b) of B_a gK_ab B_b^T: gw^T (k*k, O*C) = sum over phases of T_ab gK_ab^T,
    products with a long output row (gK_ab @ T_ab^T, O*C rows of k*k, ran 10x slower)."""
    xp = get_array_module(gk)
    o, c, k, _ = w_shape
    mixing = _mixing(k, gk.dtype, xp)
    taps = mixing.shape[1] // 4
    gk = gk.reshape(4, o * c, taps)
    gwt = mixing[:, :taps] @ gk[0].T
    for phase in range(1, 4):
        gwt += mixing[:, taps * phase:taps * (phase + 1)] @ gk[phase].T
    return xp.ascontiguousarray(gwt.T).reshape(w_shape)


def extend(x, axes, r):
    """E along each of ``axes``: r pixels each side, [x[0], x ..., x[-1]] (r = 1) or
    [-3x[0], x[0], x ..., x[-1], -3x[-1]] (r = 2)."""
    xp = get_array_module(x)
    shape = list(x.shape)
    for axis in axes:
        shape[axis] += 2 * r
    e = xp.empty(shape, dtype=x.dtype)
    e[tuple(slice(r, -r) if axis in axes else slice(None) for axis in range(x.ndim))] = x
    for n, axis in enumerate(axes):  # each pass fills its border from the lines filled before it
        inside = tuple(slice(r, -r) if later in axes[n + 1:] else slice(None) for later in range(x.ndim))
        m = xp.moveaxis(e[inside], axis, 0)  # a view
        m[r - 1] = m[r]
        m[-r] = m[-r - 1]
        if r == 2:
            xp.multiply(m[2], -3, out=m[0])
            xp.multiply(m[-3], -3, out=m[-1])
    return e


def _fold(g, axis, r):
    """E's adjoint along one axis: the border lines added back onto the first and last."""
    def line(i):
        return tuple(i if a == axis else slice(None) for a in range(g.ndim))
    out = g[line(slice(r, -r))].copy()
    out[line(0)] += g[line(r - 1)] - 3 * g[line(0)] if r == 2 else g[line(0)]
    out[line(-1)] += g[line(-r)] - 3 * g[line(-1)] if r == 2 else g[line(-1)]
    return out


def extend_adjoint(g, axes, r):
    for axis in reversed(axes):
        g = _fold(g, axis, r)
    return g


def _interpolation_slots(r, length):
    """For v[s::2], s = 0, 1: (s, start, count, (w0, w1)), v[s::2] = w0 e[start:][:count] + w1 e[start + 1:][:count]."""
    for s in range(2):
        p = s - r  # the first position in this slot
        i, odd = p // 2, p % 2
        yield s, i + r if odd else i - 1 + r, length + r, (0.75, 0.25) if odd else (0.25, 0.75)


def interpolate(e, r):
    """x2 interpolation along the last axis of a signal extended by r, L + 2r -> 2L + 2r
    (positions -r .. 2L + r - 1): even 2i from e[i-1]/4 + 3e[i]/4, odd 2i+1 from 3e[i]/4 + e[i+1]/4."""
    xp = get_array_module(e)
    length = e.shape[-1] - 2 * r
    v = xp.empty(e.shape[:-1] + (2 * length + 2 * r,), dtype=e.dtype)
    for s, start, count, (w0, w1) in _interpolation_slots(r, length):
        v[..., s::2] = w0 * e[..., start:start + count] + w1 * e[..., start + 1:start + 1 + count]
    return v


def interpolate_adjoint(g, r):
    xp = get_array_module(g)
    length = (g.shape[-1] - 2 * r) // 2
    e = xp.zeros(g.shape[:-1] + (length + 2 * r,), dtype=g.dtype)
    for s, start, count, (w0, w1) in _interpolation_slots(r, length):
        e[..., start:start + count] += w0 * g[..., s::2]
        e[..., start + 1:start + 1 + count] += w1 * g[..., s::2]
    return e


def _edges(k):
    """The ring one pixel out of up(x), edge by edge: (x's axis and index of the line it comes
    from, [(kernel line, output line)] it reaches, whether it keeps the corners)."""
    r = k // 2
    near = [(r - 1 - j, j) for j in range(r)]  # output line j reads the ring through kernel line r-1-j
    far = [(r + 1 + j, -1 - j) for j in range(r)]
    return ((2, 0, near, True), (2, -1, far, True), (3, 0, near, False), (3, -1, far, False))


def _take(a, axis, index):
    return a[:, :, index] if axis == 2 else a[:, :, :, index]


def _ring(x, axis, index, corners, r):
    """The ring's edge as a (N, C, 1, 2L + 2r) row: x's edge line extended and interpolated."""
    v = interpolate(extend(_take(x, axis, index), (2,), r), r)
    if not corners:  # the corners are counted once, with the top and bottom rows
        v[..., r - 1] = 0
        v[..., -r] = 0
    return v[:, :, None, :]


def _edge_kernel(w, axis, lines):
    """The 1-D kernels (len(lines) * O, C, 1, k) that carry an edge of the ring to its output lines."""
    xp = get_array_module(w)
    return xp.concatenate([_take(w, axis, line)[:, :, None, :] for line, _ in lines], axis=0)


def check_upsample_conv2d_args(x, w, b):
    if w.ndim == 4 and (w.shape[2] != w.shape[3] or w.shape[2] not in KERNELS):
        raise ValueError(f"upsample_conv2d: weight must be (O, C, k, k) with k in {KERNELS}, "
                         f"got {tuple(w.shape)}")
    check_conv2d_args(x, w, b, 1, w.shape[-1] // 2 if w.ndim == 4 else 0)


def _phases(o, shifts, h, w):
    """(output block of z, rows of z, columns of z, rows of y, columns of y) of each phase."""
    for a in range(2):
        for c in range(2):
            block = slice((2 * a + c) * o, (2 * a + c + 1) * o)
            yield block, slice(shifts[a], shifts[a] + h), slice(shifts[c], shifts[c] + w), \
                slice(a, None, 2), slice(c, None, 2)


def upsample_conv2d_forward(x, w, b, k):
    """y; k = phase_kernels(w)."""
    xp = get_array_module(x)
    n, _, h, wd = x.shape
    o, _, size, _ = w.shape
    r = size // 2
    z = conv2d_forward(extend(x, (2, 3), r), k, None, 1, 0)
    y = xp.empty((n, o, 2 * h, 2 * wd), dtype=x.dtype)
    for block, zr, zc, yr, yc in _phases(o, _phase_weights(size)[1], h, wd):
        if b is None:
            y[:, :, yr, yc] = z[:, block, zr, zc]
        else:
            xp.add(z[:, block, zr, zc], b.reshape(1, o, 1, 1), out=y[:, :, yr, yc])
    for axis, index, lines, corners in _edges(size):
        out = conv2d_forward(_ring(x, axis, index, corners, r), _edge_kernel(w, axis, lines), None, 1, 0)
        for j, (_, line) in enumerate(lines):
            _take(y, axis, line)[...] -= out[:, j * o:(j + 1) * o, 0]
    return y


def upsample_conv2d_backward(x, w, k, gy, need_x, need_w):
    """(gx, gw); k = phase_kernels(w), kept from the forward pass."""
    xp = get_array_module(x)
    _, _, h, wd = x.shape
    o, _, size, _ = w.shape
    r = size // 2
    e = extend(x, (2, 3), r)
    gz = xp.zeros((x.shape[0], 4 * o, e.shape[2] - k.shape[2] + 1, e.shape[3] - k.shape[3] + 1), dtype=x.dtype)
    for block, zr, zc, yr, yc in _phases(o, _phase_weights(size)[1], h, wd):
        gz[:, block, zr, zc] = gy[:, :, yr, yc]
    ge, gk = conv2d_backward(e, k, gz, 1, 0, need_x, need_w)
    gx = extend_adjoint(ge, (2, 3), r) if need_x else None
    gw = phase_kernels_adjoint(gk, w.shape) if need_w else None
    for axis, index, lines, corners in _edges(size):
        g_out = -xp.concatenate([_take(gy, axis, line)[:, :, None] for _, line in lines], axis=1)
        g_ring, g_kernel = conv2d_backward(_ring(x, axis, index, corners, r), _edge_kernel(w, axis, lines),
                                           xp.ascontiguousarray(g_out), 1, 0, need_x, need_w)
        if need_w:
            for j, (line, _) in enumerate(lines):
                _take(gw, axis, line)[...] += g_kernel[j * o:(j + 1) * o, :, 0]
        if need_x:
            g_ring = g_ring[:, :, 0]
            if not corners:
                g_ring[..., r - 1] = 0
                g_ring[..., -r] = 0
            _take(gx, axis, index)[...] += extend_adjoint(interpolate_adjoint(g_ring, r), (2,), r)
    return gx, gw


class UpsampleConv2d(Function):
    name = "upsample_conv2d"

    def forward(self, x, w, b=None):
        check_upsample_conv2d_args(x, w, b)
        self.x, self.w, self.k = x, w, phase_kernels(w)
        return upsample_conv2d_forward(x, w, b, self.k)

    def backward(self, gy):
        need_x, need_w = self.needs_input_grad[0], self.needs_input_grad[1]
        need_b = len(self.needs_input_grad) > 2 and self.needs_input_grad[2]
        gb = gy.sum(axis=(0, 2, 3)) if need_b else None
        gx, gw = upsample_conv2d_backward(self.x, self.w, self.k, gy, need_x, need_w)
        return gx, gw, gb
