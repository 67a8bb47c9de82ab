"""Stage 4: predict full quadrats, score them, and write predictions and errors back into FiftyOne."""
