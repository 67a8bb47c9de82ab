"""The class-index conventions every stage shares (MMSegmentation's): 0 is background, 255 is ignored.

prepare writes masks with them, the heads' losses and the metrics skip IGNORE_INDEX pixels, and
training views pad with it; docs/prepared_dataset.md documents them.
"""

BACKGROUND_INDEX = 0
IGNORE_INDEX = 255
