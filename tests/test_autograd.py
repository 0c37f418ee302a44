"""The autodiff itself: graph order, shared sub-graphs, broadcasting, no_grad,
accumulation, release of the graph, and the elementwise operators."""
import gc
import weakref

import numpy as np
import pytest
from helpers import gradcheck
from hypothesis import given
from hypothesis import strategies as st

import minifcrn as mf
import minifcrn.functional as F


@pytest.mark.paths("reference", "cuda")  # array code only: the same NumPy on every CPU path
def test_node_used_twice_gets_both_contributions(device):
    x = mf.tensor([1.5, -2.0], device=device, requires_grad=True)
    y = x * x + x  # dy/dx = 2x + 1
    y.sum().backward()
    np.testing.assert_allclose(mf.tensor(x.grad).numpy(), [4.0, -3.0])


@pytest.mark.paths("reference", "cuda")  # array code only: the same NumPy on every CPU path
def test_diamond_graph(device):
    x = mf.tensor(3.0, device=device, requires_grad=True)
    a, b = x * 2.0, x * x
    (a * b).backward()  # d(2x^3)/dx = 6x^2
    assert float(mf.tensor(x.grad).numpy()) == pytest.approx(54.0)


@pytest.mark.paths("reference", "cuda")  # array code only: the same NumPy on every CPU path
def test_deep_chain_is_iterative(device):
    """A long chain must not hit Python's recursion limit."""
    x = mf.tensor(1.0, device=device, requires_grad=True)
    y = x
    for _ in range(5000):
        y = y + 1.0
    y.backward()
    assert float(mf.tensor(x.grad).numpy()) == 1.0


@pytest.mark.paths("reference", "cuda")  # array code only: the same NumPy on every CPU path
def test_broadcasting_gradients_reduce_to_operand_shapes(device):
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((3, 1)), rng.standard_normal((1, 4))
    for op in (lambda p, q: p + q, lambda p, q: p - q, lambda p, q: p * q, lambda p, q: p / (q * q + 1.0)):
        gradcheck(op, [a, b], device=device)
    c = rng.standard_normal((2, 3, 4))
    gradcheck(lambda p, q: p * q, [c, rng.standard_normal(4)], device=device)


@given(st.sampled_from(["add", "sub", "mul", "div", "neg", "sum", "mean", "reshape", "getitem", "pad2d"]),
       st.integers(0, 2**32 - 1))
@pytest.mark.paths("reference", "cuda")  # array code only: the same NumPy on every CPU path
def test_elementwise_and_shape_ops_gradients(device, op, seed):
    rng = np.random.default_rng(seed)
    x, y = rng.standard_normal((2, 3)), rng.uniform(0.5, 2.0, (2, 3))
    fns = {
        "add": lambda a, b: a + b, "sub": lambda a, b: 2.0 - a - b, "mul": lambda a, b: a * b * 3.0,
        "div": lambda a, b: a / b + 1.0 / b, "neg": lambda a, b: -a + b,
        "sum": lambda a, b: a.sum(axis=1) + b.sum(axis=(0, 1), keepdims=True).reshape(1),
        "mean": lambda a, b: a.mean(axis=0, keepdims=True) * b.mean(),
        "reshape": lambda a, b: a.reshape(3, 2) * b.reshape((3, 2)),
        "getitem": lambda a, b: a[:, 1:] * b[0, 1:] + a[[0, 0, 1]].sum(),
        "pad2d": lambda a, b: mf.functional.pad2d(a, 1, 2, 0, 3) * 2.0 + b.sum(),
    }
    gradcheck(fns[op], [x, y], device=device, seed=seed)


@pytest.mark.paths("reference", "cuda")  # array code only: the same NumPy on every CPU path
def test_python_scalars_keep_the_tensor_dtype(device):
    x = mf.tensor([1.0, 2.0], device=device, requires_grad=True)
    for y in (x * 2.5, 2.5 * x, x + 1, 1 - x, x / 3.0, 3.0 / x, -x, x.mean()):
        assert y.dtype == np.float32


@pytest.mark.paths("reference", "cuda")  # array code only: the same NumPy on every CPU path
def test_no_grad_records_nothing(device):
    x = mf.tensor([1.0, 2.0], device=device, requires_grad=True)
    with mf.no_grad():
        assert not mf.is_grad_enabled()
        y = F.relu(x * 2.0)
    assert mf.is_grad_enabled()
    assert not y.requires_grad and y.creator is None
    with pytest.raises(RuntimeError, match="does not require grad"):
        y.sum().backward()


@pytest.mark.paths("reference", "cuda")  # array code only: the same NumPy on every CPU path
def test_gradients_accumulate_until_cleared(device):
    x = mf.tensor([1.0, 2.0], device=device, requires_grad=True)
    (x * 3.0).sum().backward()
    (x * x).sum().backward()
    np.testing.assert_allclose(mf.tensor(x.grad).numpy(), [3 + 2, 3 + 4])


@pytest.mark.paths("reference", "cuda")  # array code only: the same NumPy on every CPU path
def test_non_scalar_backward_needs_explicit_gradient(device):
    x = mf.tensor([1.0, 2.0], device=device, requires_grad=True)
    y = x * x
    with pytest.raises(ValueError, match=r"non-scalar output of shape \(2,\) needs an explicit gradient"):
        y.backward()
    with pytest.raises(ValueError, match="does not match output shape"):
        y.backward(np.ones(3))
    y.backward(np.array([1.0, 10.0]))
    np.testing.assert_allclose(mf.tensor(x.grad).numpy(), [2.0, 40.0])


def test_graph_released_after_backward(device):
    x = mf.tensor(np.ones((1, 1, 4, 4)), device=device, requires_grad=True)
    w = mf.tensor(np.ones((2, 1, 3, 3)), device=device, requires_grad=True)
    y = F.conv2d(x, w, padding=1)
    loss = F.relu(y).sum()
    fn = y.creator
    saved = weakref.ref(fn.x)
    del x
    loss.backward()
    assert fn.inputs is None and not hasattr(fn, "x") and not hasattr(fn, "w")
    gc.collect()
    assert saved() is None  # the buffer conv2d saved for backward is gone
    with pytest.raises(RuntimeError, match="already released"):
        loss.backward()


def test_training_memory_does_not_grow(device):
    """Repeated forward/backward steps keep the live arrays flat: their number on the CPU, the
    bytes CuPy's memory pool hands out on a GPU."""
    x = mf.tensor(np.ones((2, 1, 8, 8)), device=device)
    w = mf.tensor(np.ones((3, 1, 3, 3)) * 0.1, device=device, requires_grad=True)

    def step():
        F.mse_loss(F.upsample_bilinear(F.max_pool2d(F.relu(F.conv2d(x, w, padding=1)))),
                   mf.tensor(np.zeros((2, 3, 8, 8)), device=device)).backward()

    def live_arrays():
        gc.collect()
        if device == "cuda":
            return mf.backend.cupy().get_default_memory_pool().used_bytes()
        return sum(isinstance(o, np.ndarray) for o in gc.get_objects())

    step()
    before = live_arrays()
    for _ in range(20):
        step()
    slack = 2 if device == "cpu" else 2 * 2 * 3 * 8 * 8 * 8  # two arrays, or the bytes of two of the largest
    assert live_arrays() <= before + slack


def test_mixing_devices_is_an_error(monkeypatch):
    a, b = mf.tensor([1.0]), mf.tensor([2.0])
    real = mf.Tensor.device
    monkeypatch.setattr(mf.Tensor, "device", property(lambda t: "cuda" if t is b else real.fget(t)))
    with pytest.raises(ValueError, match=r"Mul: inputs are on different devices \(cpu\(1,\), cuda\(1,\)\)"):
        a * b


def test_tensor_constructor_dtypes_and_conversions():
    assert mf.tensor([1, 2]).dtype == np.float32
    assert mf.tensor(np.arange(3)).dtype == np.float32
    assert mf.tensor(np.zeros(2)).dtype == np.float64
    assert mf.tensor(np.zeros(2, np.float32), dtype=np.float64).dtype == np.float64
    src = np.zeros(3)
    t = mf.tensor(src)
    src[0] = 5
    assert t.numpy()[0] == 0  # tensor() copies
    assert t.to("cpu") is t and t.shape == (3,) and t.device == "cpu"
    with pytest.raises(TypeError, match="dtype must be floating point"):
        mf.tensor([1], dtype=np.int32)
    with pytest.raises(ValueError, match="device must be 'cpu' or 'cuda', got 'tpu'"):
        mf.tensor([1.0], device="tpu")


def test_cuda_without_gpu_says_what_to_install():
    if mf.backend.cuda_available():
        pytest.skip("a GPU is present")
    with pytest.raises(mf.backend.DeviceError, match=r"pip install \"minifcrn\[gpu\]\""):
        mf.tensor([1.0], device="cuda")


def test_graph_holds_only_what_backward_saved():
    """An intermediate result nobody's backward needs is freed while the graph waits for backward."""
    x = mf.tensor(np.arange(-2.0, 3.0), requires_grad=True)
    h = x * 2.0  # relu's input: relu's backward needs only its output
    h_data = weakref.ref(h.data)
    y = F.relu(h).sum()
    del h
    gc.collect()
    assert h_data() is None
    y.backward()
    np.testing.assert_array_equal(x.grad, [0, 0, 0, 2, 2])


def test_leaf_gradients_never_alias():
    """Gradients a backward hands out as is (x + y passes g to both) are copied into each leaf."""
    x, y = mf.tensor(np.ones(3), requires_grad=True), mf.tensor(np.ones(3), requires_grad=True)
    (x + y).backward(np.full(3, 2.0))
    assert x.grad is not y.grad and not np.shares_memory(x.grad, y.grad)
    x.grad[0] = 7.0
    np.testing.assert_array_equal(y.grad, [2.0, 2.0, 2.0])
    z = mf.tensor(np.ones((2, 3)), requires_grad=True)
    upstream = np.ones(6)
    z.reshape(6).backward(upstream)  # reshape's gradient is a view of the upstream array
    assert not np.shares_memory(z.grad, upstream)


def test_no_grad_in_one_thread_leaves_the_others_recording():
    """Threads (e.g. Dask workers) entering and leaving no_grad out of step leave recording as it was."""
    import threading

    entered, release = threading.Barrier(2), threading.Event()

    def worker(first):
        with mf.no_grad():
            entered.wait()
            if first:
                release.wait(5)  # leaves after the other thread, which entered after it
            else:
                release.set()
            assert not mf.is_grad_enabled()

    threads = [threading.Thread(target=worker, args=(k == 0,)) for k in range(2)]
    for t in threads:
        t.start()
    assert mf.is_grad_enabled()
    for t in threads:
        t.join()
    assert mf.is_grad_enabled()
    x = mf.tensor(np.ones(3), requires_grad=True)
    assert (x * 2).sum().requires_grad
