"""Names of everything this stage writes into FiftyOne, and how it stores the year: the source of truth for later stages.

Documented for people in docs/fiftyone_dataset.md; change both together.
"""

from __future__ import annotations

from common.settings import Settings

GT_FIELD = Settings.gt_field_name  # the GT_FIELD_NAME setting's default, defined there once; the setting may rename it
SPLIT_TAGS = ("train", "val", "test")

# Sample fields
CVAT_PROJECT_NAME = "cvat_project_name"
CVAT_TASK_ID = "cvat_task_id"
CVAT_TASK_NAME = "cvat_task_name"
CVAT_SUBSET = "cvat_subset"
SITE = "site"
YEAR = "year"  # text ("2023"): the App draws an int field with thousands separators ("2,023"); see stored_year
QUADRAT_ID = "quadrat_id"
IMAGE_SHA256 = "image_sha256"  # photos imported in place (import_images.py): content hash, for reruns and predict

POINTS_FIELD = "gt_points"  # CoralNet-style point annotations as fo.Keypoints (import_points.py)

# Attributes on each fo.Polyline in the ground-truth field (besides label and confidence)
Z_ORDER = "z_order"
OCCLUDED = "occluded"
CVAT_SHAPE_ID = "cvat_shape_id"

# dataset.info keys
INFO_CREATED_BY = "created_by"
CREATED_BY = "reefseg.data_engineering"
INFO_CVAT_TASKS = "cvat_tasks"  # {str(task_id): updated_date} of the tasks imported, for incremental pulls
INFO_MEDIA_FOLDER = "media_folder"  # the dataset's own folder under MEDIA_DIR (data_engineering.media)


def stored_year(year: int | None) -> str | None:
    """A year as the dataset stores it: text, which the App shows as written ("2023", never "2,023")."""
    return None if year is None else str(year)


def read_year(value: object) -> int | None:
    """A stored year as a number: text ("2023"), or an int in a dataset made before years were text; else None."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().isdigit():
        return int(value)
    return None
