"""Frozen DINOv2/DINOv3 ViT backbones, segmentation heads, sliding-window inference, checkpoints."""
