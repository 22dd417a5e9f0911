"""The batch augmentation (torchvision functional ops) against numpy, image by image."""

from __future__ import annotations

import numpy as np
import torch

from mkcnet.data.dataset import augment_batch


def test_each_image_is_flipped_and_shifted_as_numpy_would():
    images = torch.randint(0, 256, (6, 3, 25, 25), dtype=torch.uint8)
    out = augment_batch(images, torch.Generator().manual_seed(7))
    # The same draws, in the same order, from a generator with the same seed.
    g = torch.Generator().manual_seed(7)
    pad = 2  # round(0.08 * 25)
    flip = (torch.rand(6, generator=g) < 0.5).numpy()
    dy, dx = torch.randint(0, 2 * pad + 1, (2, 6), generator=g).numpy()
    assert flip.any() and not flip.all() and len(set(dy.tolist())) > 1  # the draws exercise both paths
    for i, image in enumerate(images.numpy()):
        expected = image[:, :, ::-1] if flip[i] else image
        expected = np.pad(expected, ((0, 0), (pad, pad), (pad, pad)), mode="reflect")[:, dy[i]:dy[i] + 25,
                                                                                      dx[i]:dx[i] + 25]
        np.testing.assert_array_equal(out[i].numpy(), expected)
    assert out.dtype == torch.uint8 and not torch.equal(out, images)
