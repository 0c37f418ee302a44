"""Bilinear x2 up-sampling fused with the 'same' convolution after it (FCRN's decoder).

    y = conv2d(up(x), w, b, padding=r),    x (N, C, H, W), w (O, C, k, k), k = 2r + 1 = 3 or 5
                                           -> y (N, O, 2H, 2W)

computed from x without building up(x).

Phases.  Along one axis up(x)[2i] = x[i-1]/4 + 3x[i]/4 and up(x)[2i+1] = 3x[i]/4 + x[i+1]/4
(borders clamp, as in ``upsample.py``).  So output row 2i + a (phase a = 0, 1) reads, through
the kernel's k rows, only q = r + 2 rows of x, with weights B_a (k x q, ``_phase_weights``).
In 2-D phase (a, b) is a q x q convolution of x with

    K_ab = B_a^T w B_b                                   (per output and input channel)

(5x5: 16 taps per output instead of 25; 3x3: 9 as before, in products four times as wide).
The four phases are one convolution of x zero-padded by r, 4O output maps, phase (a, b) read
off its output shifted by (a, b) at 5x5 (not shifted at 3x3):

    z = conv2d(x, K, padding=r),    y[:, :, 2i+a, 2j+b] = z[:, (a, b), i + s_a, j + s_b] + b

The border.  Those formulas applied to the zero-padded x give x[0]/4 one pixel out, where the
convolution's padding should be 0, and 3x[0]/4 on the first line, where up(x) clamps to x[0]:
an error of -x[0]/4 and +x[0]/4 on two lines along each edge (x's first line interpolated
along the edge), and likewise at the far edges.  Its convolution reaches the r + 1 output lines
next to the edge, and is added there as 1-D k-tap convolutions along the edge (``_edges``):
at the top, for 5x5, with w[t] the kernel's row t,

    y[0] += (w[2] - w[1]) * v / 4,   y[1] += (w[1] - w[0]) * v / 4,   y[2] += w[0] * v / 4

(In 2-D the corners come right when the top and bottom lines are interpolated as the padded
map is and the left and right ones as up(x) is.)

Backward is each step's transpose: ``conv2d_backward`` for the convolutions, the adjoints of
the interpolation and of the kernel mixing.  x, w and K are saved.  Everything is array code
on top of ``conv2d_forward``/``conv2d_backward``, so it runs on every path; the network takes
it on the CPU (``nn.UpsampleConv2d``), and tests/test_ops.py holds it to the reference, the
up-sampling then the convolution.
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np

from minifcrn.autograd import Function
from minifcrn.backend import get_array_module
from minifcrn.ops.conv import check_conv2d_args, conv2d_backward, conv2d_forward
from minifcrn.ops.upsample import upsample_bilinear_backward, upsample_bilinear_forward

KERNELS = (3, 5)


@lru_cache(maxsize=None)
def _phase_weights(k):
    """(B, shifts): B (2, k, q), B[a, t, i] the weight of x row i_out + shifts[a] - r + i (row
    i_out + shifts[a] + i of x zero-padded by r) in up(x) row 2 i_out + a + t - r, which kernel
    row t reads for output row 2 i_out + a."""
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
    written in place (a single product would need a transpose of the result)."""
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
    products with a long output row (rather than gK_ab @ T_ab^T, O*C short rows of k*k)."""
    xp = get_array_module(gk)
    o, c, k, _ = w_shape
    mixing = _mixing(k, gk.dtype, xp)
    taps = mixing.shape[1] // 4
    gk = gk.reshape(4, o * c, taps)
    gwt = mixing[:, :taps] @ gk[0].T
    for phase in range(1, 4):
        gwt += mixing[:, taps * phase:taps * (phase + 1)] @ gk[phase].T
    return xp.ascontiguousarray(gwt.T).reshape(w_shape)


def _interpolation_slots(r, length):
    """(s, start, count, (w0, w1)) for s = 0, 1:
    v[s::2] = w0 e[start:start + count] + w1 e[start + 1:start + 1 + count]."""
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


def _edges(k, rows, cols):
    """What the zero padding gets wrong, edge by edge, for an output of rows x cols: x's axis and
    index of the edge line, and [(output line, [(kernel line, weight)])] it corrects.

    Up-sampling the zero-padded x gives x[0]/4 one pixel out (0 is right) and 3x[0]/4 on the
    first line (x[0] is right): the error is -1/4 and +1/4 of a line of x, interpolated along
    the edge, on lines -1 and 0 (and +1/4, -1/4 on lines L-1 and L at the far edge).  Output
    line j reads line d through kernel line d - j + r."""
    r = k // 2

    def lines(length):
        near, far = [], []
        for j in range(min(r + 1, length)):
            near.append((j, [(d - j + r, c) for d, c in ((-1, -0.25), (0, 0.25)) if 0 <= d - j + r < k]))
            far.append((-1 - j, [(j + r + d, c) for d, c in ((0, 0.25), (1, -0.25)) if j + r + d < k]))
        return near, far

    (top, bottom), (left, right) = lines(rows), lines(cols)
    return (2, 0, top), (2, -1, bottom), (3, 0, left), (3, -1, right)


def _take(a, axis, index):
    return a[:, :, index] if axis == 2 else a[:, :, :, index]


def _edge_line(x, axis, index, r):
    """The edge's line of x, x2-interpolated along the edge, as a (N, C, 1, 2L + 2r) row with the
    convolution's reach on each side: along the top and bottom rows as the zero-padded map is
    (x[0]/4 one pixel out), along the left and right columns as up(x) is (zero outside)."""
    xp = get_array_module(x)
    line = _take(x, axis, index)
    if axis == 2:
        v = interpolate(xp.pad(line, ((0, 0), (0, 0), (r, r))), r)
    else:
        v = xp.pad(upsample_bilinear_forward(line[..., None], 2)[..., 0], ((0, 0), (0, 0), (r, r)))
    return v[:, :, None, :]


def _edge_line_adjoint(g, x_shape, axis, r):
    xp = get_array_module(g)
    if axis == 2:
        return interpolate_adjoint(g, r)[..., r:-r]
    n, c, h, _ = x_shape
    gu = xp.zeros((n, c, 2 * h, 2), dtype=g.dtype)
    gu[..., 0] = g[..., r:-r]
    return upsample_bilinear_backward(gu, 2, (n, c, h, 1))[..., 0]


def _edge_kernel(w, axis, lines):
    """The 1-D kernels (len(lines) * O, C, 1, k) that carry an edge's error to its output lines."""
    xp = get_array_module(w)
    return xp.concatenate([sum(weight * _take(w, axis, t) for t, weight in terms)[:, :, None, :]
                           for _, terms in lines], axis=0)


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
    z = conv2d_forward(x, k, None, 1, r)
    y = xp.empty((n, o, 2 * h, 2 * wd), dtype=x.dtype)
    for block, zr, zc, yr, yc in _phases(o, _phase_weights(size)[1], h, wd):
        if b is None:
            y[:, :, yr, yc] = z[:, block, zr, zc]
        else:
            xp.add(z[:, block, zr, zc], b.reshape(1, o, 1, 1), out=y[:, :, yr, yc])
    for axis, index, lines in _edges(size, 2 * h, 2 * wd):
        out = conv2d_forward(_edge_line(x, axis, index, r), _edge_kernel(w, axis, lines), None, 1, 0)
        for j, (line, _) in enumerate(lines):
            _take(y, axis, line)[...] += out[:, j * o:(j + 1) * o, 0]
    return y


def upsample_conv2d_backward(x, w, k, gy, need_x, need_w):
    """(gx, gw); k = phase_kernels(w), kept from the forward pass."""
    xp = get_array_module(x)
    n, _, h, wd = x.shape
    o, _, size, _ = w.shape
    r = size // 2
    gz = xp.zeros((n, 4 * o, h + 2 * r - k.shape[2] + 1, wd + 2 * r - k.shape[3] + 1), dtype=x.dtype)
    for block, zr, zc, yr, yc in _phases(o, _phase_weights(size)[1], h, wd):
        gz[:, block, zr, zc] = gy[:, :, yr, yc]
    gx, gk = conv2d_backward(x, k, gz, 1, r, need_x, need_w)
    gw = phase_kernels_adjoint(gk, w.shape) if need_w else None
    for axis, index, lines in _edges(size, 2 * h, 2 * wd):
        g_out = xp.concatenate([_take(gy, axis, line)[:, :, None] for line, _ in lines], axis=1)
        g_line, g_kernel = conv2d_backward(_edge_line(x, axis, index, r), _edge_kernel(w, axis, lines),
                                           xp.ascontiguousarray(g_out), 1, 0, need_x, need_w)
        if need_w:
            for j, (_, terms) in enumerate(lines):
                for t, weight in terms:
                    _take(gw, axis, t)[...] += weight * g_kernel[j * o:(j + 1) * o, :, 0]
        if need_x:
            _take(gx, axis, index)[...] += _edge_line_adjoint(g_line[:, :, 0], x.shape, axis, r)
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
