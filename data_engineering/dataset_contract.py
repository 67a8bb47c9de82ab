"""Names of everything this stage writes into FiftyOne: the single source of truth for later stages.

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
YEAR = "year"
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
