"""minifcrn.dask: chunked counting equals whole-image counting; files map over a (local) cluster."""
import numpy as np
import pytest
from PIL import Image

from minifcrn.counting import count
from minifcrn.errors import InputError
from minifcrn.inference import ASSETS, load_model

da = pytest.importorskip("dask.array")
distributed = pytest.importorskip("distributed")
import minifcrn.dask as md  # noqa: E402


@pytest.fixture(scope="module")
def image():
    sample = np.asarray(Image.open(ASSETS / "sample.png"), dtype=np.float32)
    return np.concatenate([sample[:, :150], sample[::-1, :90]], axis=1)[:200]  # 200 x 240, cells at the seam


@pytest.fixture(scope="module")
def client():
    with distributed.Client(distributed.LocalCluster(n_workers=1, threads_per_worker=2, processes=False,
                                                     dashboard_address=None)) as c:
        yield c


@pytest.mark.parametrize("chunk", [64, 100])
def test_chunked_density_equals_the_whole_image_density(image, chunk):
    whole = count(image, load_model("fcrn-a"), tile_size=0)
    lazy = md.density(da.from_array(image, chunks=chunk), "fcrn-a")
    assert all(c % 8 == 0 for axis in lazy.chunks for c in axis[:-1])  # moved onto the pooling grid
    np.testing.assert_allclose(lazy.compute(), whole.density, rtol=0, atol=1e-6)


def test_count_array_on_a_distributed_cluster(image, client):
    whole = count(image, load_model("fcrn-a"), tile_size=0)
    assert md.count_array(image, "fcrn-a", chunk=96) == pytest.approx(whole.count, rel=1e-5)


def test_count_files_keeps_going_past_a_bad_file(image, client, tmp_path):
    Image.fromarray(image.astype(np.uint8)).save(tmp_path / "a.png")
    (tmp_path / "b.png").write_bytes(b"not a png")
    rows = md.count_files([tmp_path / "a.png", tmp_path / "b.png"], "fcrn-a")
    assert rows[0].count == pytest.approx(count(tmp_path / "a.png").count, abs=0.005)  # as results.csv
    assert rows[0].weights == rows[1].weights and rows[0].file.endswith("a.png")
    assert rows[1].count is None and "cannot read image" in rows[1].error


def test_bad_arrays_are_refused():
    with pytest.raises(InputError, match="must be a 2-D"):
        md.density(np.zeros((2, 16, 16)), "fcrn-a")
    with pytest.raises(InputError, match="constant"):
        md.density(np.ones((32, 32)), "fcrn-a")
