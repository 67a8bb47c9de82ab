"""The view bank: reproducible from the seed, independent of other images, image and mask moved together."""

from __future__ import annotations

import numpy as np

from train.views import IGNORE_INDEX, View, apply_view, view_bank, views_key

COLOURS = np.array([[10, 20, 30], [200, 0, 0], [0, 0, 200], [0, 200, 0]], dtype=np.uint8)


def _pair(size: int = 64, block: int = 8, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A mask of random square blocks and an image that is exactly its colours."""
    rng = np.random.default_rng(seed)
    mask = np.kron(rng.integers(0, 4, (size // block, size // block)), np.ones((block, block), dtype=np.int64)).astype(
        np.uint8
    )
    mask[0, :] = 3  # an asymmetric mark, so a wrong flip or rotation cannot go unnoticed
    return COLOURS[mask], mask


def _mask_from_image(image: np.ndarray) -> np.ndarray:
    distance = ((image[:, :, None, :].astype(int) - COLOURS[None, None].astype(int)) ** 2).sum(-1)
    return distance.argmin(-1).astype(np.uint8)


def test_same_seed_same_views_and_other_seed_others():
    a = view_bank("site_2020_01", 300, 400, 8, 56, (0.5, 1.5), seed=3)
    assert a == view_bank("site_2020_01", 300, 400, 8, 56, (0.5, 1.5), seed=3)
    assert a != view_bank("site_2020_01", 300, 400, 8, 56, (0.5, 1.5), seed=4)
    assert a != view_bank("site_2020_02", 300, 400, 8, 56, (0.5, 1.5), seed=3)
    assert (
        views_key(a) == views_key(list(a)) != views_key(view_bank("site_2020_01", 300, 400, 8, 56, (0.5, 1.5), seed=4))
    )


def test_views_stay_inside_image_and_cover_all_eight_dihedral_transforms():
    views = view_bank("x", 300, 400, 400, 56, (0.5, 1.5), seed=0)
    assert {(v.flip, v.rot90) for v in views} == {(f, r) for f in (False, True) for r in range(4)}
    for v in views:
        assert 56 / 1.5 - 1 <= v.size <= 56 / 0.5 + 1
        assert 0 <= v.top <= 300 - v.size and 0 <= v.left <= 400 - v.size


def test_windows_never_exceed_a_small_image():
    views = view_bank("small", 100, 80, 16, 56, (0.5, 1.0), seed=0)
    assert all(56 <= v.size <= 80 and v.top + v.size <= 100 and v.left + v.size <= 80 for v in views)
    assert {v.size for v in view_bank("tiny", 40, 60, 4, 56, (0.5, 1.0), seed=0)} == {40}  # seen whole, resized up


def test_image_and_mask_get_the_same_transform_at_scale_one():
    image, mask = _pair()
    for flip in (False, True):
        for rot90 in range(4):
            view = View(top=8, left=16, size=40, crop=40, flip=flip, rot90=rot90)
            crop_image, crop_mask = apply_view(image, mask, view)
            assert crop_image.shape == (40, 40, 3) and crop_mask.shape == (40, 40)
            np.testing.assert_array_equal(_mask_from_image(crop_image), crop_mask)
            expected = mask[8:48, 16:56]
            expected = np.rot90(expected[:, ::-1] if flip else expected, rot90)
            np.testing.assert_array_equal(crop_mask, expected)


def test_image_and_mask_agree_after_resizing():
    image, mask = _pair(size=128, block=16)
    for view in view_bank("y", 128, 128, 16, 64, (0.6, 1.4), seed=1):
        crop_image, crop_mask = apply_view(image, mask, view)
        counted = crop_mask != IGNORE_INDEX
        agree = (_mask_from_image(crop_image) == crop_mask)[counted].mean()
        assert agree > 0.95, (view, agree)  # only block edges may blend colours


def test_a_window_past_the_border_is_ignore_in_the_mask_and_black_in_the_image():
    image, mask = _pair(size=32)
    crop_image, crop_mask = apply_view(image, mask, View(top=16, left=16, size=32, crop=32, flip=False, rot90=0))
    assert (crop_mask[16:, :] == IGNORE_INDEX).all() and (crop_mask[:, 16:] == IGNORE_INDEX).all()
    assert (crop_mask[:16, :16] != IGNORE_INDEX).all()
    assert (crop_image[16:, 16:] == 0).all()
    assert int((crop_mask == IGNORE_INDEX).sum()) == 32 * 32 - 16 * 16
