"""Stage 3: train a segmentation head on a frozen backbone over a prepared folder."""
