"""The fake CVAT's write side, through the real cvat-sdk, as a push back to CVAT will use it."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
from cvat_sdk import make_client, models
from cvat_sdk.api_client.exceptions import ForbiddenException, UnauthorizedException
from cvat_sdk.core.proxies.annotations import AnnotationUpdateAction
from cvat_sdk.masks import decode_mask
from cvat_server import FakeCvat, add_reef_project, mask, png_bytes


def shape(label_id: int, points: list[float], **extra) -> models.LabeledShapeRequest:
    return models.LabeledShapeRequest(type="polygon", frame=0, label_id=label_id, points=points, **extra)


def test_annotation_writes_are_kept_and_read_back():
    cvat = FakeCvat()
    reef = add_reef_project(cvat)
    with cvat.serve() as url, make_client(url, credentials=(cvat.username, cvat.password)) as client:
        task = client.tasks.retrieve(reef.test_task)
        task.update_annotations(
            models.PatchedLabeledDataRequest(shapes=[shape(reef.porites, [1, 1, 9, 1, 5, 8], z_order=3)]),
            action=AnnotationUpdateAction.CREATE,
        )
        created = cvat.annotations[reef.test_task]["shapes"][-1]
        assert (created["label_id"], created["z_order"], created["points"]) == (reef.porites, 3, [1, 1, 9, 1, 5, 8])

        task.update_annotations(
            models.PatchedLabeledDataRequest(shapes=[shape(reef.acropora, [2, 2, 9, 2, 5, 8], id=created["id"])]),
            action=AnnotationUpdateAction.UPDATE,
        )
        assert cvat.annotations[reef.test_task]["shapes"][-1]["label_id"] == reef.acropora
        task.remove_annotations(ids=[created["id"]])
        assert [s["id"] for s in task.get_annotations().shapes] == [
            s["id"] for s in cvat.annotations[reef.test_task]["shapes"]
        ]
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


def test_answers_like_a_real_cvat_through_the_sdk():
    """Jobs, statuses, labels, shapes and pages as CVAT's own recorded test database shows them."""
    cvat = FakeCvat()
    reef = add_reef_project(cvat)
    with cvat.serve() as url, make_client(url, credentials=(cvat.username, cvat.password)) as client:
        project = client.projects.retrieve(reef.project)
        tasks = project.get_tasks()
        statuses = Counter(str(t.status) for t in tasks)
        assert len(tasks) == 12 and statuses == {"completed": 3, "annotation": 5, "validation": 4}  # few are completed
        assert sum(r.path == "/api/tasks" for r in cvat.requests) == 2  # CVAT's default page of 10, then the rest

        train = client.tasks.retrieve(reef.train_task)
        assert train.jobs["count"] == 2 and [j.frame_count for j in train.get_jobs()] == [1, 1]  # one job per frame
        val_jobs = client.tasks.retrieve(reef.val_task).get_jobs()
        assert sorted(str(j.type) for j in val_jobs) == ["annotation", "ground_truth"]
        [gt_job] = [j for j in val_jobs if str(j.type) == "ground_truth"]
        assert [s.points for s in gt_job.get_annotations().shapes] == [[2, 2, 30, 2, 16, 30]]
        assert (
            len(client.tasks.retrieve(reef.val_task).get_annotations().shapes) == 2
        )  # gt mode: the GT job's shape left out

        labels = project.get_labels()
        assert [lb.name for lb in labels] == [
            "Acropora",
            "Porites",
            "Pocillopora",
            "Colony axis",
        ]  # no sublabel at the top
        assert [sub.name for sub in labels[-1].sublabels] == ["base", "tip"] and str(labels[-1].type) == "skeleton"

        shape = train.get_annotations().shapes[0]
        assert (shape.source, shape.score, shape.elements) == ("manual", 1.0, [])


def test_video_task_lists_one_frame_entry_named_after_the_video():
    cvat = FakeCvat()
    project = cvat.add_project("Reef", labels=[("Acropora", [])])
    video = cvat.add_video_task(project, "Dive 3", "dive_03.mp4", [png_bytes(32, 24)] * 5)
    with cvat.serve() as url, make_client(url, credentials=(cvat.username, cvat.password)) as client:
        task = client.tasks.retrieve(video)
        meta = task.get_meta()
        assert [(f.name, f.width, f.height) for f in meta.frames] == [("dive_03.mp4", 32, 24)] and meta.size == 5
        assert (task.mode, task.data_original_chunk_type, task.size) == ("interpolation", "video", 5)


def test_gt_pool_honeypots_repeat_real_frames():
    cvat = FakeCvat()
    project = cvat.add_project("Reef", labels=[("Acropora", [])])
    frames = [(f"Moorea_2021_{i:02d}.jpg", png_bytes(16, 16, (i * 40, 0, 0))) for i in range(5)]
    pool = cvat.add_task(project, "Honeypots", frames=frames, segment_size=2, honeypots={1: 4})
    with cvat.serve() as url, make_client(url, credentials=(cvat.username, cvat.password)) as client:
        task = client.tasks.retrieve(pool)
        names = [f.name for f in task.get_meta().frames]
        assert names[1] == names[4] == "Moorea_2021_04.jpg" and task.validation_mode == "gt_pool"
        assert task.get_frame(1, quality="original").read() == frames[4][1]
        layout, _ = client.api_client.tasks_api.retrieve_validation_layout(pool)
        assert (layout.honeypot_frames, layout.honeypot_real_frames, layout.validation_frames) == ([1], [4], [4])
        assert sorted(str(j.type) for j in task.get_jobs()) == ["annotation", "annotation", "ground_truth"]


def test_mask_shapes_are_encoded_as_cvat_encodes_them():
    bitmap = np.zeros((6, 8), dtype=bool)
    bitmap[1:4, 2:5] = True
    bitmap[2, 3] = False  # a hole
    points = mask(0, 1, bitmap)["points"]
    assert points == [
        0,
        4,
        1,
        4,
        2,
        1,
        4,
        3,
    ]  # runs start with 0s (none here), then left, top, right, bottom (inclusive)
    assert (decode_mask(points, image_width=8, image_height=6) == bitmap).all()


def test_job_annotation_writes_land_in_the_task():
    cvat = FakeCvat()
    reef = add_reef_project(cvat)
    with cvat.serve() as url, make_client(url, credentials=(cvat.username, cvat.password)) as client:
        second_job = client.tasks.retrieve(reef.train_task).get_jobs()[1]
        assert [s.frame for s in second_job.get_annotations().shapes] == [1]
        second_job.update_annotations(
            models.PatchedLabeledDataRequest(shapes=[shape(reef.acropora, [1, 1, 9, 1, 5, 8])]),
            action=AnnotationUpdateAction.CREATE,
        )
    assert (
        sum(
            s["label_id"] == reef.acropora and s["points"] == [1, 1, 9, 1, 5, 8]
            for s in cvat.annotations[reef.train_task]["shapes"]
        )
        == 1
    )
