"""``torch_dataset()``: our data sets in a plain torch training loop."""

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from factorvae.data import factors_to_index, load
from factorvae.data.factors import to_float


def test_items_are_float_images_and_int_factor_classes():
    data = load("dsprites")
    ds = data.torch_dataset()
    assert len(ds) == 737_280
    f = np.array([[2, 5, 17, 3, 30]])
    x, factors = ds[int(factors_to_index(f, data.factor_sizes)[0])]
    assert x.dtype == torch.float32 and x.shape == (1, 64, 64) and factors.dtype == torch.int64
    assert factors.tolist() == f[0].tolist()
    assert torch.equal(x, torch.from_numpy(data.observations(f)[0]))
    assert torch.equal(ds[-1][1], torch.tensor([2, 5, 39, 31, 31]))
    with pytest.raises(IndexError, match="out of range"):
        ds[len(ds)]


def _npz(path):
    classes = np.array(np.unravel_index(np.arange(48), (1, 3, 2, 2, 2, 2))).T.astype(np.int64)  # (48, 6)
    imgs = np.zeros((48, 64, 64), np.uint8)
    imgs[np.arange(48), np.arange(48), 0] = 1  # each image marks its own index in column 0
    np.savez_compressed(path, imgs=imgs, latents_classes=classes, latents_values=classes.astype(np.float64))
    return path


def test_dataloader_with_workers_on_a_release_file_and_an_image_folder(tmp_path):
    data = load("dsprites", _npz(tmp_path / "d.npz"))
    loader = torch.utils.data.DataLoader(data.torch_dataset(), batch_size=16, shuffle=True, num_workers=2,
                                         generator=torch.Generator().manual_seed(0))
    seen = []
    for x, factors in loader:
        assert x.shape[1:] == (1, 64, 64) and factors.shape[1] == 5
        index = factors_to_index(factors.numpy(), data.factor_sizes)
        assert (x[np.arange(len(x)), 0, index, 0] == 1).all()  # image and factors belong together
        seen += index.tolist()
    assert sorted(seen) == list(range(48))
    folder = tmp_path / "faces"
    folder.mkdir()
    for i in range(5):
        Image.fromarray(np.full((80, 80), 40 * i, np.uint8)).save(folder / f"{i}.png")
    faces = load("faces", folder)
    (x, factors), = torch.utils.data.DataLoader(faces.torch_dataset(), batch_size=5, num_workers=2)
    assert x.shape == (5, 1, 64, 64) and factors.shape == (5, 0) and factors.dtype == torch.int64
    assert torch.equal(x, torch.from_numpy(to_float(faces.images(np.arange(5)))))


def test_the_docs_training_loop_runs():
    text = (Path(__file__).resolve().parents[1] / "docs" / "data.md").read_text()
    block = text.split("<!-- example: torch dataset -->", 1)[1].split("```python", 1)[1].split("```", 1)[0]
    scope: dict = {}
    exec(compile(block, "docs/data.md", "exec"), scope)
    assert scope["step"] == 19 and torch.isfinite(scope["loss"])
