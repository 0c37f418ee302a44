"""Bilinear x2 up-sampling fused with the 5x5 'same' convolution after it (FCRN-B's decoder).

    y = conv2d(up(x), w, b, padding=2),    x (N, C, H, W), w (O, C, 5, 5) -> y (N, O, 2H, 2W)

computed without building up(x), with 16 kernel taps per output instead of 25.

Phases.  Along one axis up(x)[2i] = x[i-1]/4 + 3x[i]/4 and up(x)[2i+1] = 3x[i]/4 + x[i+1]/4
(borders clamp, as in ``upsample.py``).  So output row 2i + a (phase a = 0, 1) reads, through
the kernel's 5 rows, only the 4 input rows i+a-2 .. i+a+1, with weights B_a (5 x 4,
``_phase_weights``).  In 2-D, phase (a, b) is a 4x4 convolution of x with

    K_ab = B_a^T w B_b                                   (per output and input channel)

and the four phases are one 'valid' convolution, 4O output maps, of x extended by two pixels
on each side, phase (a, b) read off its output shifted by (a, b):

    z = conv2d(E(x), K),    y[:, :, 2i+a, 2j+b] = z[:, (a, b), i+a, j+b] + b

The extension.  E(x) = [-3x[0], x[0], x[0], ..., x[-1], x[-1], -3x[-1]] along each axis.
Interpolating it by the formulas above gives up(x) inside, exactly 0 two pixels out, but x[0]
(x[-1]) one pixel out, where the convolution's zero padding should be.  So the ring one pixel
out (rows -1 and 2H, columns -1 and 2W; call it v) is subtracted: at the top

    y[:, :, 0] -= v_top * w[:, :, 1],    y[:, :, 1] -= v_top * w[:, :, 0]

(1-D 5-tap convolutions along the edge; v_top is x's first row extended and interpolated) and
likewise at the other three edges (the ring's corners belong to the top and bottom rows).

Backward is each step's transpose: ``conv2d_backward`` for the convolutions, the adjoints of
E, of the interpolation and of the kernel mixing.  x, w and K are saved.  Everything is
array code on top of ``conv2d_forward``/``conv2d_backward``, so the CPU and the GPU share it.
"""
from __future__ import annotations

import numpy as np

from minifcrn.autograd import Function
from minifcrn.backend import get_array_module
from minifcrn.ops.conv import check_conv2d_args, conv2d_backward, conv2d_forward

KERNEL = 5  # FCRN-B's up-sampling convolutions; at 3x3 the phases need 3x3 kernels: nothing saved


def _phase_weights():
    """B (2, 5, 4): B[a, t, i] is the weight of E(x) row i + a + r (r = the output's low-res row)
    in up(x) row 2r + a + t - 2, the row kernel row t reads for output row 2r + a."""
    weights = np.zeros((2, KERNEL, 4))
    for a in range(2):
        for t in range(KERNEL):
            p = a + t - 2  # up(x) row 2r + p; x rows r + d with weights (below), i = d - a + 2
            half = p // 2
            pairs = ((half - 1, 0.25), (half, 0.75)) if p % 2 == 0 else ((half, 0.75), (half + 1, 0.25))
            for d, weight in pairs:
                weights[a, t, d - a + 2] += weight
    return weights


def _mixing(dtype, xp):
    """T (25, 64): K_ab[i, j] = sum over (t, s) of w[t, s] T[(t, s), (a, b, i, j)], that is
    B_a[t, i] B_b[s, j], so that all four phase kernels are one product, w (O*C, 25) @ T."""
    b = _phase_weights()
    return xp.asarray(np.einsum("ati,bsj->tsabij", b, b).reshape(KERNEL * KERNEL, 64), dtype=dtype)


def phase_kernels(w):
    """K (4O, C, 4, 4), phases (a, b) outermost: K_ab = B_a^T w B_b, one product per phase
    written in place (a single product would need a transpose: 15x slower, 2026-12-03)."""
    xp = get_array_module(w)
    o, c = w.shape[:2]
    mixing = _mixing(w.dtype, xp)
    k = xp.empty((4, o * c, 16), dtype=w.dtype)
    for phase in range(4):
        xp.matmul(w.reshape(o * c, KERNEL * KERNEL), mixing[:, 16 * phase:16 * (phase + 1)], out=k[phase])
    return k.reshape(4 * o, c, 4, 4)


def phase_kernels_adjoint(gk, w_shape):
    """gw = sum over (a, b) of B_a gK_ab B_b^T: the products with T's transpose."""
    xp = get_array_module(gk)
    o, c = w_shape[:2]
    mixing = _mixing(gk.dtype, xp)
    gk = gk.reshape(4, o * c, 16)
    gw = sum(gk[phase] @ mixing[:, 16 * phase:16 * (phase + 1)].T for phase in range(4))
    return gw.reshape(w_shape)


def extend(x, axes):
    """E along each of ``axes``: two pixels each side, [-3x[0], x[0], x ..., x[-1], -3x[-1]]."""
    xp = get_array_module(x)
    shape = list(x.shape)
    for axis in axes:
        shape[axis] += 4
    e = xp.empty(shape, dtype=x.dtype)
    e[tuple(slice(2, -2) if axis in axes else slice(None) for axis in range(x.ndim))] = x
    for k, axis in enumerate(axes):  # each pass fills its border from the lines filled before it
        inside = tuple(slice(2, -2) if later in axes[k + 1:] else slice(None) for later in range(x.ndim))
        m = xp.moveaxis(e[inside], axis, 0)  # a view
        m[1] = m[2]
        xp.multiply(m[2], -3, out=m[0])
        m[-2] = m[-3]
        xp.multiply(m[-3], -3, out=m[-1])
    return e


def _fold(g, axis):
    """E's adjoint along one axis: the four border lines added back onto the first and last."""
    def line(i):
        return tuple(i if a == axis else slice(None) for a in range(g.ndim))
    out = g[line(slice(2, -2))].copy()
    out[line(0)] += g[line(1)] - 3 * g[line(0)]
    out[line(-1)] += g[line(-2)] - 3 * g[line(-1)]
    return out


def extend_adjoint(g, axes):
    for axis in reversed(axes):
        g = _fold(g, axis)
    return g


def interpolate(e):
    """x2 interpolation of an extended signal along the last axis, L + 4 -> 2L + 4 (positions
    -2 .. 2L + 1): even 2i from e[i-1]/4 + 3e[i]/4, odd 2i+1 from 3e[i]/4 + e[i+1]/4."""
    xp = get_array_module(e)
    length = e.shape[-1] - 4
    v = xp.empty(e.shape[:-1] + (2 * length + 4,), dtype=e.dtype)
    v[..., 0::2] = 0.25 * e[..., :length + 2] + 0.75 * e[..., 1:length + 3]
    v[..., 1::2] = 0.75 * e[..., 1:length + 3] + 0.25 * e[..., 2:]
    return v


def interpolate_adjoint(g):
    xp = get_array_module(g)
    length = (g.shape[-1] - 4) // 2
    even, odd = g[..., 0::2], g[..., 1::2]
    e = xp.zeros(g.shape[:-1] + (length + 4,), dtype=g.dtype)
    e[..., :length + 2] += 0.25 * even
    e[..., 1:length + 3] += 0.75 * (even + odd)
    e[..., 2:] += 0.25 * odd
    return e


# The ring one pixel out of up(x), edge by edge: where it comes from in x, which kernel rows (or
# columns) carry it to which output rows (columns).  Index 0 of the ring's last axis is position -2.
_EDGES = (  # (name, x's axis and index, kernel axis, [(kernel index, output index)], corners kept)
    ("top", 2, 0, [(1, 0), (0, 1)], True),
    ("bottom", 2, -1, [(3, -1), (4, -2)], True),
    ("left", 3, 0, [(1, 0), (0, 1)], False),
    ("right", 3, -1, [(3, -1), (4, -2)], False),
)


def _take(a, axis, index):
    return a[:, :, index] if axis == 2 else a[:, :, :, index]


def _ring(x, axis, index, corners):
    """The ring's edge as a (N, C, 1, 2L + 4) row: x's edge line extended and interpolated."""
    v = interpolate(extend(_take(x, axis, index), (2,)))
    if not corners:  # the corners are counted once, with the top and bottom rows
        v[..., 1] = 0
        v[..., -2] = 0
    return v[:, :, None, :]


def _edge_kernel(w, axis, taps):
    """The 1-D kernels (2O, C, 1, 5) that carry an edge of the ring to its two output lines."""
    xp = get_array_module(w)
    return xp.concatenate([_take(w, axis, k)[:, :, None, :] for k, _ in taps], axis=0)


def check_upsample_conv2d_args(x, w, b):
    check_conv2d_args(x, w, b, 1, KERNEL // 2)
    if w.shape[2:] != (KERNEL, KERNEL):
        raise ValueError(f"upsample_conv2d: weight must be (O, C, {KERNEL}, {KERNEL}), got {tuple(w.shape)}")


def upsample_conv2d_forward(x, w, b, k):
    """y; k = phase_kernels(w)."""
    xp = get_array_module(x)
    n, _, h, wd = x.shape
    o = w.shape[0]
    z = conv2d_forward(extend(x, (2, 3)), k, None, 1, 0)
    y = xp.empty((n, o, 2 * h, 2 * wd), dtype=x.dtype)
    for a in range(2):
        for c in range(2):
            phase = z[:, (2 * a + c) * o:(2 * a + c + 1) * o, a:a + h, c:c + wd]
            if b is None:
                y[:, :, a::2, c::2] = phase
            else:
                xp.add(phase, b.reshape(1, o, 1, 1), out=y[:, :, a::2, c::2])
    for _, axis, index, taps, corners in _EDGES:
        line = conv2d_forward(_ring(x, axis, index, corners), _edge_kernel(w, axis, taps), None, 1, 0)
        for k, (_, out) in enumerate(taps):
            _take(y, axis, out)[...] -= line[:, k * o:(k + 1) * o, 0]
    return y


def upsample_conv2d_backward(x, w, k, gy, need_x, need_w):
    """(gx, gw); k = phase_kernels(w), kept from the forward pass."""
    xp = get_array_module(x)
    _, _, h, wd = x.shape
    o = w.shape[0]
    gz = xp.zeros((x.shape[0], 4 * o, h + 1, wd + 1), dtype=x.dtype)
    for a in range(2):
        for c in range(2):
            gz[:, (2 * a + c) * o:(2 * a + c + 1) * o, a:a + h, c:c + wd] = gy[:, :, a::2, c::2]
    ge, gk = conv2d_backward(extend(x, (2, 3)), k, gz, 1, 0, need_x, need_w)
    gx = extend_adjoint(ge, (2, 3)) if need_x else None
    gw = phase_kernels_adjoint(gk, w.shape) if need_w else None
    for _, axis, index, taps, corners in _EDGES:
        g_line = -xp.concatenate([_take(gy, axis, out)[:, :, None] for _, out in taps], axis=1)
        g_ring, g_kernel = conv2d_backward(_ring(x, axis, index, corners), _edge_kernel(w, axis, taps),
                                           xp.ascontiguousarray(g_line), 1, 0, need_x, need_w)
        if need_w:
            for k, (kernel_index, _) in enumerate(taps):
                _take(gw, axis, kernel_index)[...] += g_kernel[k * o:(k + 1) * o, :, 0]
        if need_x:
            g_ring = g_ring[:, :, 0]
            if not corners:
                g_ring[..., 1] = 0
                g_ring[..., -2] = 0
            _take(gx, axis, index)[...] += extend_adjoint(interpolate_adjoint(g_ring), (2,))
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
