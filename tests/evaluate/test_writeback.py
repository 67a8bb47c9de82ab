"""Predicted colonies written as FiftyOne's stored documents: exactly what its Label objects would have stored."""

from __future__ import annotations

from typing import Any

import fiftyone as fo
import numpy as np

from evaluate import writeback
from evaluate.colonies import find_colonies

CLASSES = ["background", "Acropora", "Porites", "Pocillopora"]


def _without_ids(document: Any) -> Any:
    """A stored document with every label id, creation and modification time left out (they differ by design)."""
    if isinstance(document, dict):
        return {k: _without_ids(v) for k, v in document.items() if k not in ("_id", "created_at", "last_modified_at")}
    if isinstance(document, list | tuple):
        return [_without_ids(v) for v in document]
    return document


def _fragmented_colonies(height: int = 90, width: int = 120) -> list[Any]:
    rng = np.random.default_rng(5)
    blocks = rng.integers(0, len(CLASSES), (height // 6, width // 6), dtype=np.uint8)
    mask = np.kron(blocks, np.ones((6, 6), dtype=np.uint8))
    mask[rng.random(mask.shape) < 0.03] = 2
    return find_colonies(mask, rng.random(mask.shape, dtype=np.float32))


def _former_polylines(colonies: list[Any], width: int, height: int) -> fo.Polylines:
    """How predicted colonies were made before `colonies_document`: one validated Polyline object each."""
    return fo.Polylines(
        polylines=[
            fo.Polyline(
                label=CLASSES[c.class_index],
                points=[
                    [(float(x) / width, float(y) / height) for x, y in list(ring.coords)[:-1]]
                    for ring in (c.polygon.exterior, *c.polygon.interiors)
                ],
                closed=True,
                filled=False,
                confidence=round(c.confidence, 4),
            )
            for c in colonies
        ]
    )


def test_colony_documents_store_exactly_what_the_polyline_objects_stored(dataset_name: str) -> None:
    colonies = _fragmented_colonies()
    assert len(colonies) > 20
    former = _former_polylines(colonies, 120, 90)
    document = writeback.colonies_document(colonies, CLASSES, 120, 90)
    assert _without_ids(writeback.colonies_to_polylines(colonies, CLASSES, 120, 90).to_dict()) == _without_ids(
        former.to_dict()
    )
    by_objects, by_documents = fo.Dataset(f"{dataset_name}_objects"), fo.Dataset(f"{dataset_name}_documents")
    try:
        for dataset in (by_objects, by_documents):
            dataset.add_samples([fo.Sample(filepath=f"/photos/{i}.jpg") for i in range(2)])
        by_objects.set_values("colonies", [former, fo.Polylines()])
        empty = writeback.colonies_document([], CLASSES, 120, 90)
        ids = by_documents.values("id")
        writeback.set_label_documents(by_documents, "colonies", fo.Polylines, {ids[0]: document, ids[1]: empty})
        assert {k: str(v) for k, v in by_documents.get_field_schema(flat=True).items()} == {
            k: str(v) for k, v in by_objects.get_field_schema(flat=True).items()
        }  # every embedded field declared, of the same kind
        stored = [[_without_ids(s.to_dict()) for s in d.sort_by("filepath")] for d in (by_objects, by_documents)]
        assert stored[0] == stored[1]
        for key in former.polylines[0].to_dict():  # as stored, not as loaded (which fills in defaults)
            path = f"colonies.polylines.{'id' if key == '_id' else key}"
            held = [d.sort_by("filepath").values(path) for d in (by_objects, by_documents)]
            assert [len(v) for v in held[0]] == [len(v) for v in held[1]] == [len(colonies), 0], key
            assert key == "_id" or held[0] == held[1], key
        polylines = by_documents.first()["colonies"].polylines
        assert len(polylines) == len(colonies) and len({p.id for p in polylines}) == len(colonies)
        assert by_documents.count_values("colonies.polylines.label") == by_objects.count_values(
            "colonies.polylines.label"
        )
    finally:
        by_objects.delete()
        by_documents.delete()
