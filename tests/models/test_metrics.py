"""Metrics from one confusion matrix, checked by hand and against torchmetrics and FiftyOne."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torchmetrics.classification import (
    MulticlassAccuracy,
    MulticlassConfusionMatrix,
    MulticlassF1Score,
    MulticlassJaccardIndex,
    MulticlassPrecision,
    MulticlassRecall,
)

from models.metrics import (
    IGNORE_INDEX,
    ConfusionAccumulator,
    compute_metrics,
    confusion_matrix,
    cover_errors,
    cover_from_matrix,
    cover_percent,
)

K = 5
NAMES = ["background", "acropora", "porites", "pocillopora", "montipora"]


def _masks(seed: int = 0, images: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """GT with ignored rows; class 3 only predicted, class 4 in neither (the NaN cases)."""
    rng = np.random.default_rng(seed)
    gt = rng.integers(0, 3, (images, 24, 20)).astype(np.uint8)
    pred = rng.integers(0, 4, (images, 24, 20)).astype(np.uint8)
    pred[:, :8] = gt[:, :8]  # some agreement, so scores are not all near chance
    gt[:, -3:] = IGNORE_INDEX
    return gt, pred


def test_hand_computed_scores() -> None:
    gt = np.array([[0, 0, 1, 1], [1, 1, 2, 255]])
    pred = np.array([[0, 1, 1, 1], [1, 2, 2, 0]])
    matrix = confusion_matrix(gt, pred, 3)
    assert matrix.tolist() == [[1, 1, 0], [0, 3, 1], [0, 0, 1]]
    m = compute_metrics(matrix, ["background", "a", "b"])
    assert m.iou.tolist() == pytest.approx([1 / 2, 3 / 5, 1 / 2])
    assert m.accuracy.tolist() == pytest.approx([1 / 2, 3 / 4, 1])
    assert m.precision.tolist() == pytest.approx([1, 3 / 4, 1 / 2])
    assert m.dice.tolist() == pytest.approx([2 / 3, 3 / 4, 2 / 3])
    assert m.miou == pytest.approx((3 / 5 + 1 / 2) / 2)
    assert m.miou_with_background == pytest.approx((1 / 2 + 3 / 5 + 1 / 2) / 3)
    assert m.pixel_accuracy == pytest.approx(5 / 7)
    assert m.fwiou == pytest.approx((2 * 1 / 2 + 4 * 3 / 5 + 1 * 1 / 2) / 7)


def test_absent_classes_are_nan_and_left_out_of_means() -> None:
    gt, pred = _masks()
    m = compute_metrics(confusion_matrix(gt, pred, K), NAMES)
    assert math.isnan(m.iou[4]) and math.isnan(m.dice[4])  # in neither
    assert m.iou[3] == 0 and math.isnan(m.accuracy[3]) and m.precision[3] == 0  # only predicted
    assert m.miou == pytest.approx(np.mean(m.iou[1:4]))
    assert m.miou_with_background == pytest.approx(np.mean(m.iou[:4]))
    assert m.macc == pytest.approx(np.mean(m.accuracy[:3]))
    assert m.summary()["miou"] == pytest.approx(m.miou)
    assert m.per_class()[4]["iou"] is None


def test_empty_matrix_gives_nan_not_an_error() -> None:
    m = compute_metrics(np.zeros((3, 3), dtype=np.int64), ["background", "a", "b"])
    assert all(v is None for v in m.summary().values())


def test_accumulating_images_equals_one_matrix_and_torch_equals_numpy() -> None:
    gt, pred = _masks()
    acc = ConfusionAccumulator(K)
    for g, p in zip(gt, pred):
        acc.update(torch.from_numpy(g), torch.from_numpy(p))
    assert np.array_equal(acc.matrix, confusion_matrix(gt, pred, K))
    assert acc.matrix.sum() == (gt != IGNORE_INDEX).sum()


def test_out_of_range_class_is_refused() -> None:
    with pytest.raises(ValueError, match="outside 0..2"):
        confusion_matrix(np.array([0, 3]), np.array([0, 1]), 3)
    with pytest.raises(ValueError, match="differs"):
        confusion_matrix(np.zeros((2, 2)), np.zeros((2, 3)), 3)


def test_equals_torchmetrics() -> None:
    gt, pred = _masks()
    m = compute_metrics(confusion_matrix(gt, pred, K), NAMES)
    t, p = torch.from_numpy(gt).long(), torch.from_numpy(pred).long()

    def tm(metric_cls, average):
        return metric_cls(K, average=average, ignore_index=IGNORE_INDEX)(p, t).numpy().astype(np.float64)

    expected_matrix = MulticlassConfusionMatrix(K, ignore_index=IGNORE_INDEX)(p, t).numpy()
    assert np.array_equal(confusion_matrix(gt, pred, K), expected_matrix)
    defined = ~np.isnan(m.iou)
    # torchmetrics writes 0 where we write NaN (0/0); where both are defined they must agree.
    assert np.allclose(m.iou[defined], tm(MulticlassJaccardIndex, None)[defined])
    assert m.miou_with_background == pytest.approx(float(tm(MulticlassJaccardIndex, "macro")))
    assert m.fwiou == pytest.approx(float(tm(MulticlassJaccardIndex, "weighted")))
    has_gt = m.gt_pixels > 0
    assert np.allclose(m.accuracy[has_gt], tm(MulticlassRecall, None)[has_gt])
    assert np.allclose(m.accuracy[has_gt], tm(MulticlassAccuracy, None)[has_gt])
    predicted = m.predicted_pixels > 0
    assert np.allclose(m.precision[predicted], tm(MulticlassPrecision, None)[predicted])
    assert np.allclose(m.dice[defined], tm(MulticlassF1Score, None)[defined])
    assert np.nanmean(m.dice) == pytest.approx(float(tm(MulticlassF1Score, "macro")))
    assert m.pixel_accuracy == pytest.approx(float(tm(MulticlassAccuracy, "micro")))


def test_confusion_matrix_equals_fiftyone(dataset_name: str) -> None:
    import fiftyone as fo

    gt, pred = _masks(seed=1)
    dataset = fo.Dataset(dataset_name)
    dataset.add_samples(
        fo.Sample(filepath=f"/nonexistent/{i}.png", gt=fo.Segmentation(mask=g), pred=fo.Segmentation(mask=p))
        for i, (g, p) in enumerate(zip(gt, pred))
    )
    results = dataset.evaluate_segmentations("pred", gt_field="gt", mask_targets=dict(enumerate(NAMES)))
    assert np.array_equal(confusion_matrix(gt, pred, K), results.confusion_matrix(classes=NAMES))
    dataset.delete()


def test_cover_per_image_and_errors_over_split() -> None:
    mask = np.array([[0, 1, 1, 255], [2, 2, 2, 255]])
    assert cover_percent(mask, 3).tolist() == pytest.approx([100 / 6, 200 / 6, 300 / 6])
    matrix = confusion_matrix(mask, np.array([[1, 1, 1, 0], [2, 2, 0, 0]]), 3)
    gt_cover, predicted_cover = cover_from_matrix(matrix)
    assert gt_cover.tolist() == pytest.approx([100 / 6, 200 / 6, 300 / 6])
    assert predicted_cover.tolist() == pytest.approx([100 / 6, 300 / 6, 200 / 6])
    errors = cover_errors(
        np.array([[10.0, 90.0], [50.0, 50.0], [np.nan, np.nan]]), np.array([[20.0, 80.0], [30.0, 70.0], [1.0, 99.0]])
    )
    assert errors.mae.tolist() == pytest.approx([15.0, 15.0])
    assert errors.bias.tolist() == pytest.approx([-5.0, 5.0])
    assert errors.images == 2


def test_merged_confusion_matrix_equals_the_matrix_of_the_mapped_masks() -> None:
    from models.metrics import map_classes, merge_classes

    rng = np.random.default_rng(7)
    gt = rng.integers(0, 6, size=(40, 50))
    gt[rng.random(gt.shape) < 0.1] = 255  # ignored pixels stay ignored
    predicted = rng.integers(0, 6, size=(40, 50))
    mapping = [0, 1, 1, 2, 3, 2]  # six finer classes into four coarser ones, background staying 0
    fine = confusion_matrix(gt, predicted, 6)
    coarse = confusion_matrix(map_classes(gt, mapping), map_classes(predicted, mapping), 4)
    assert np.array_equal(merge_classes(fine, mapping), coarse)
    assert coarse.sum() == fine.sum() and coarse[1, 1] == fine[1:3, 1:3].sum()
    assert (map_classes(gt, mapping) == 255).sum() == (gt == 255).sum()
    with pytest.raises(ValueError, match="does not match a mapping of 3 classes"):
        merge_classes(fine, [0, 1, 1])
