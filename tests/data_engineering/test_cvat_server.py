"""The fake CVAT's write side, through the real cvat-sdk, as a push back to CVAT will use it."""

from __future__ import annotations

import pytest
from cvat_sdk import make_client, models
from cvat_sdk.api_client.exceptions import ForbiddenException, UnauthorizedException
from cvat_sdk.core.proxies.annotations import AnnotationUpdateAction
from cvat_server import FakeCvat, add_reef_project


def shape(label_id: int, points: list[float], **extra) -> models.LabeledShapeRequest:
    return models.LabeledShapeRequest(type="polygon", frame=0, label_id=label_id, points=points, **extra)


def test_annotation_writes_are_kept_and_read_back():
    cvat = FakeCvat()
    reef = add_reef_project(cvat)
    with cvat.serve() as url, make_client(url, credentials=(cvat.username, cvat.password)) as client:
        task = client.tasks.retrieve(reef.test_task)
        task.update_annotations(models.PatchedLabeledDataRequest(shapes=[shape(reef.porites, [1, 1, 9, 1, 5, 8], z_order=3)]),
                                action=AnnotationUpdateAction.CREATE)
        created = cvat.annotations[reef.test_task]["shapes"][-1]
        assert (created["label_id"], created["z_order"], created["points"]) == (reef.porites, 3, [1, 1, 9, 1, 5, 8])

        task.update_annotations(models.PatchedLabeledDataRequest(shapes=[shape(reef.acropora, [2, 2, 9, 2, 5, 8], id=created["id"])]),
                                action=AnnotationUpdateAction.UPDATE)
        assert cvat.annotations[reef.test_task]["shapes"][-1]["label_id"] == reef.acropora
        task.remove_annotations(ids=[created["id"]])
        assert [s["id"] for s in task.get_annotations().shapes] == [s["id"] for s in cvat.annotations[reef.test_task]["shapes"]]
        assert len(cvat.annotations[reef.test_task]["shapes"]) == 1

        task.set_annotations(models.LabeledDataRequest(shapes=[shape(reef.porites, [0, 0, 4, 0, 4, 4])]))
        assert [s["points"] for s in cvat.annotations[reef.test_task]["shapes"]] == [[0, 0, 4, 0, 4, 4]]
        assert cvat.annotations[reef.test_task]["version"] == 4


def test_writes_need_authentication_and_the_csrf_header():
    cvat = FakeCvat()
    reef = add_reef_project(cvat)
    with cvat.serve() as url, make_client(url, credentials=(cvat.username, cvat.password)) as client:
        task = client.tasks.retrieve(reef.test_task)
        client.api_client.configuration.api_key.pop("csrfHeaderAuth")  # a session without Django's CSRF header
        with pytest.raises(ForbiddenException):
            task.set_annotations(models.LabeledDataRequest(shapes=[]))
        client.api_client.cookies.clear()
        with pytest.raises(UnauthorizedException):
            client.tasks.retrieve(reef.test_task)
    assert len(cvat.annotations[reef.test_task]["shapes"]) == 1
