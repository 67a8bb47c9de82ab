"""The feature cache: features equal the live backbone's, reruns reuse them, a changed image recomputes only its own."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from conftest import toy_pair, write_prepared, write_sample

from common.images import read_image
from common.runtime import Runtime
from models.backbones import build_backbone
from models.heads import build_head
from models.segmenter import Segmenter
from train import feature_cache
from train.data import bank_for, file_hashes, load_samples, read_mask
from train.views import apply_view

K, CROP = 3, 56


@pytest.fixture
def segmenter() -> Segmenter:
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        backbone = build_backbone("tiny_dinov2", layers=2)
    return Segmenter(backbone, build_head("linear", backbone.embed_dim, 2, 3)).eval()


def _entries(folder, segmenter, cache_dir):
    _, samples = load_samples(folder)
    train = samples["train"]
    banks = [bank_for(s, K, CROP, (0.7, 1.3), seed=0) for s in train]
    root = feature_cache.backbone_dir(cache_dir, segmenter.backbone, "fp32")
    entries = [
        feature_cache.cache_entry(root, cache_dir / "labels", ih, mh, bank, segmenter.backbone.layers)
        for (ih, mh), bank in zip(file_hashes(train), banks)
    ]
    jobs = [(s.image_path, s.mask_path, bank) for s, bank in zip(train, banks)]
    return train, banks, entries, jobs


def _fill(jobs, entries, segmenter):
    extract = feature_cache.make_extractor(segmenter.forward_features, Runtime(torch.device("cpu")))
    return feature_cache.fill_cache(jobs, entries, extract, batch_size=2, progress=False)


def test_cached_views_equal_the_live_backbone(tmp_path, segmenter):
    folder = write_prepared(tmp_path / "data", train=2, val=1)
    train, banks, entries, jobs = _entries(folder, segmenter, tmp_path / "cache")
    assert _fill(jobs, entries, segmenter) == 2
    data = feature_cache.CachedViews(entries, K)
    assert len(data) == 2 * K
    for index in (0, K + 2):
        maps, label = data[(0, index)]
        sample, view = train[index // K], banks[index // K][index % K]
        image, mask = apply_view(read_image(sample.image_path), read_mask(sample.mask_path), view)
        with torch.no_grad():
            live = segmenter.forward_features(torch.from_numpy(image).permute(2, 0, 1)[None])
        assert [tuple(m.shape) for m in maps] == [(32, 4, 4)] * 2
        assert all(m.dtype == torch.float16 for m in maps)
        for cached, expected in zip(maps, live):
            torch.testing.assert_close(cached.float(), expected[0], atol=5e-3, rtol=5e-3)
        np.testing.assert_array_equal(label.numpy(), mask)


def test_rerun_reuses_and_a_changed_image_recomputes_only_its_entry(tmp_path, segmenter):
    folder = write_prepared(tmp_path / "data", train=3, val=1)
    cache = tmp_path / "cache"
    _, _, entries, jobs = _entries(folder, segmenter, cache)
    assert _fill(jobs, entries, segmenter) == 3
    stamps = {p: p.stat().st_mtime_ns for e in entries for p in (*e.layer_paths, e.label_path)}

    _, _, again, jobs = _entries(folder, segmenter, cache)
    assert again == entries and _fill(jobs, again, segmenter) == 0

    train = load_samples(folder)[1]["train"]
    changed = train[1]
    image, mask = toy_pair(np.random.default_rng(99), 112)
    write_sample(folder, "train", changed.image_path.stem, image, read_mask(changed.mask_path))
    _, _, after, jobs = _entries(folder, segmenter, cache)
    assert [a == e for a, e in zip(after, entries)] == [True, False, True]
    assert after[1].label_path == entries[1].label_path  # the mask did not change: its labels are reused
    assert _fill(jobs, after, segmenter) == 1
    assert all(p.stat().st_mtime_ns == t for p, t in stamps.items())  # nothing else was rewritten
    assert after[1].complete()


def test_an_interrupted_extraction_resumes_with_what_is_missing(tmp_path, segmenter):
    folder = write_prepared(tmp_path / "data", train=3, val=1)
    _, _, entries, jobs = _entries(folder, segmenter, tmp_path / "cache")
    _fill(jobs, entries, segmenter)
    entries[2].layer_paths[1].unlink()  # as if killed between two layer files
    assert not entries[2].complete()
    assert _fill(jobs, entries, segmenter) == 1 and entries[2].complete()
    assert not list((tmp_path / "cache").rglob("*.part*"))  # no half-written file left behind


def test_backbones_with_other_weights_never_share_entries(tmp_path, segmenter):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        other = build_backbone("tiny_dinov2", layers=2)
    assert feature_cache.backbone_dir(tmp_path, other, "fp32") == feature_cache.backbone_dir(
        tmp_path, segmenter.backbone, "fp32"
    )
    with torch.no_grad():
        other.vit.cls_token += 1  # "random" weights that differ: the hash of the parameters tells them apart
    assert feature_cache.backbone_dir(tmp_path, other, "fp32") != feature_cache.backbone_dir(
        tmp_path, segmenter.backbone, "fp32"
    )
    assert feature_cache.backbone_dir(tmp_path, other, "fp32") != feature_cache.backbone_dir(tmp_path, other, "bf16")


def test_validation_reads_window_maps_back_and_scores_the_same(tmp_path, segmenter):
    from train.config import load_config, with_default_window
    from train.data import FullImages
    from train.loop import Distributed, validate

    folder = write_prepared(tmp_path / "data", train=1, val=2, size=140)
    val = load_samples(folder)[1]["val"]
    config = with_default_window(load_config(None, crop=56, window=56, val_batch_size=3))
    dirs = [
        feature_cache.window_cache_dir(tmp_path / "cache", ih, 56, config.window_stride) for ih, _ in file_hashes(val)
    ]
    classes = ["background", "Acropora", "Porites"]
    args = (segmenter, FullImages(val), classes, config, Runtime(torch.device("cpu")), Distributed())
    live = validate(*args)
    first = validate(*args, dirs)
    stored = sorted(p.relative_to(tmp_path / "cache") for p in (tmp_path / "cache").rglob("*.npy"))
    assert len(stored) == 2 * 2 and np.load(tmp_path / "cache" / stored[0]).shape == (
        9,
        32,
        4,
        4,
    )  # 3x3 windows of 56 (the default: fewest) on 140 px

    def no_backbone(images):
        raise AssertionError("the backbone ran although the window maps are cached")

    segmenter.forward_features = no_backbone
    second = validate(*args, dirs)
    np.testing.assert_array_equal(first.iou, second.iou)
    np.testing.assert_allclose(first.iou, live.iou, atol=2e-3)  # fp16-stored maps against live ones


@pytest.mark.parametrize("shape, dtype", [((5, 3, 4, 2), np.float16), ((4, 7), np.uint8), ((3, 2, 5), np.float32)])
def test_read_view_returns_each_entry_as_np_load_does(tmp_path, shape, dtype):
    array = (np.random.default_rng(0).random(shape) * 200).astype(dtype)
    path = tmp_path / "a.npy"
    np.save(path, array)
    for index in range(shape[0]):
        view = feature_cache.read_view(path, index)
        assert view.dtype == array.dtype and view.flags.writeable and np.array_equal(view, array[index])
    with pytest.raises(ValueError, match="entry 5 cannot be read"):
        feature_cache.read_view(path, 5)
    path.write_bytes(path.read_bytes()[:-1])  # an interrupted copy: the last entry is short
    with pytest.raises(ValueError, match="shorter than its header says"):
        feature_cache.read_view(path, shape[0] - 1)
