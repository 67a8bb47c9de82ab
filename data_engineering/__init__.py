"""Stage 1: coral polygons from CVAT (live server or export archive) into a persistent FiftyOne dataset."""
