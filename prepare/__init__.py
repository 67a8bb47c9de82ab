"""Stage 2: polygons in FiftyOne to class-index masks in a training-ready folder, per taxonomy."""
