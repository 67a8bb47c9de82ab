"""SAM weights at the loading edge: official `segment_anything` checkpoints and Hugging Face SAM folders.

Two formats users have on disk, both checked completely (names and shapes, against the architecture built on
PyTorch's `meta` device, so nothing is allocated) before any prediction starts, then loaded into one
`PromptableSegmenter` interface (evaluate/refine_sam.py):
- a `segment_anything` state dict (`sam_vit_b_01ec64.pth`, `sam_vit_l_0b3195.pth`, `sam_vit_h_4b8939.pth`, or
  CoralSCoP's `vit_b_coralscop.pth`), read with `torch.load(weights_only=True)`; the variant (vit_b/l/h) is read
  from its shapes and built with segment_anything's own `sam_model_registry` (other sizes with its `_build_sam`);
- a Hugging Face folder (`config.json` with `model_type: sam` + `model.safetensors`, e.g. `facebook/sam-vit-base`),
  loaded with `transformers.SamModel`.
Both see the same input: the photo resized to long side 1024 (bilinear, antialiased), normalised with SAM's
ImageNet mean and std, padded at the bottom and right to 1024 x 1024.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from common.errors import UserError
from common.fileio import sha256_file
from evaluate.refine_sam import Embedded, resized_size

if TYPE_CHECKING:
    import torch

    from common.runtime import Runtime

SAM_FORMATS = ("segment_anything", "huggingface")
PIXEL_MEAN = (123.675, 116.28, 103.53)  # SAM's, on 0-255 (ImageNet's mean and std)
PIXEL_STD = (58.395, 57.12, 57.375)
EXPECTED = (
    "expected a segment_anything SAM checkpoint (.pth state dict, e.g. sam_vit_b_01ec64.pth or CoralSCoP's "
    "vit_b_coralscop.pth) or a Hugging Face SAM folder with config.json and model.safetensors"
)
OFFICIAL_VARIANTS = {  # segment_anything's registry: embed dim -> (name, depth, heads, global attention blocks)
    768: ("vit_b", 12, 12, (2, 5, 8, 11)),
    1024: ("vit_l", 24, 16, (5, 11, 17, 23)),
    1280: ("vit_h", 32, 16, (7, 15, 23, 31)),
}


@dataclass(frozen=True)
class SamArchitecture:
    """The image encoder of a segment_anything checkpoint, as read from its shapes."""

    embed_dim: int
    depth: int
    num_heads: int
    global_attn_indexes: tuple[int, ...]

    @property
    def variant(self) -> str:
        """`vit_b`, `vit_l`, `vit_h` for segment_anything's registry sizes, else a description."""
        name, depth, heads, indexes = OFFICIAL_VARIANTS.get(self.embed_dim, ("", 0, 0, ()))
        if (depth, heads, indexes) == (self.depth, self.num_heads, self.global_attn_indexes):
            return name
        return f"vit (embed {self.embed_dim}, depth {self.depth})"


@dataclass(frozen=True)
class SamWeights:
    """Checked SAM weights: where, which format, which variant, and the hash of their files (for the journal)."""

    path: Path
    format: str  # one of SAM_FORMATS
    variant: str
    sha256: str
    architecture: SamArchitecture | None = None  # segment_anything only


def _unwrap(state: Any) -> Any:
    """The model's tensors of a checkpoint saved with a wrapper (`{"model": ...}`, DataParallel's `module.`)."""
    for key in ("model", "state_dict"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if isinstance(state, dict) and state and all(str(k).startswith("module.") for k in state):
        state = {k[len("module.") :]: v for k, v in state.items()}
    return state


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """The tensors of a .pth file, read without running any pickled code (memory-mapped where the file allows)."""
    import torch

    try:
        try:
            loaded = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as error:
            if "mmap" not in str(error):
                raise
            loaded = torch.load(path, map_location="cpu", weights_only=True)  # the pre-zip format cannot be mapped
    except Exception as error:  # truncated, not a torch file, or pickled objects other than tensors
        raise UserError(
            f"--sam-weights {path} cannot be read as a PyTorch checkpoint ({type(error).__name__}); {EXPECTED}"
        ) from None
    state = _unwrap(loaded)
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise UserError(
            f"--sam-weights {path} holds a {type(loaded).__name__}, not a state dict of tensors; {EXPECTED}"
        )
    return state


def sam_architecture(path: Path, shapes: dict[str, tuple[int, ...]]) -> SamArchitecture:
    """The encoder size of a segment_anything state dict, from its shapes, or a UserError saying what the file is."""
    if not any(k.startswith("image_encoder.") for k in shapes) or not any(
        k.startswith("mask_decoder.") for k in shapes
    ):
        looks = ""
        if "cls_token" in shapes or "pos_embed" in shapes or any(k.startswith("blocks.") for k in shapes):
            looks = " (it looks like a DINOv2/DINOv3 backbone: give that to --weights)"
        elif any(k.startswith("vision_encoder.") for k in shapes):
            looks = " (its names are Hugging Face SAM's: give the folder with its config.json)"
        example = ", ".join(sorted(shapes)[:3]) or "no tensors"
        raise UserError(
            f"--sam-weights {path} has no image_encoder.* and mask_decoder.* tensors ({example}...){looks}; {EXPECTED}"
        )
    try:
        embed_dim = shapes["image_encoder.patch_embed.proj.weight"][0]
        depth = 1 + max(int(m.group(1)) for k in shapes if (m := re.match(r"image_encoder\.blocks\.(\d+)\.", k)))
        rel_pos = [shapes[f"image_encoder.blocks.{i}.attn.rel_pos_h"] for i in range(depth)]
    except (KeyError, ValueError):
        raise UserError(
            f"--sam-weights {path} lacks tensors of SAM's image encoder (patch_embed, blocks); {EXPECTED}"
        ) from None
    windowed = min(r[0] for r in rel_pos)
    global_blocks = tuple(i for i, r in enumerate(rel_pos) if r[0] != windowed)
    return SamArchitecture(embed_dim, depth, embed_dim // rel_pos[0][1], global_blocks)


def _build_segment_anything(architecture: SamArchitecture) -> Any:
    """segment_anything's own builder for the architecture: the registry's for vit_b/l/h, `_build_sam` otherwise."""
    from segment_anything import sam_model_registry
    from segment_anything.build_sam import _build_sam

    if architecture.variant in sam_model_registry:
        return sam_model_registry[architecture.variant]()
    return _build_sam(
        architecture.embed_dim, architecture.depth, architecture.num_heads, list(architecture.global_attn_indexes)
    )


def _compare(path: Path, expected: dict[str, tuple[int, ...]], found: dict[str, tuple[int, ...]], what: str) -> None:
    missing = sorted(set(expected) - set(found))
    unexpected = sorted(set(found) - set(expected))
    wrong = sorted(k for k in set(expected) & set(found) if tuple(expected[k]) != tuple(found[k]))
    if missing or unexpected or wrong:
        detail = "; ".join(
            f"{label} {', '.join(keys[:3])}{'...' if len(keys) > 3 else ''}"
            for label, keys in (("missing", missing), ("unexpected", unexpected), ("other shapes", wrong))
            if keys
        )
        raise UserError(f"--sam-weights {path} does not match {what} ({detail}); {EXPECTED}")


def _check_segment_anything(path: Path) -> SamWeights:
    import torch

    shapes = {k: tuple(v.shape) for k, v in read_state_dict(path).items()}
    architecture = sam_architecture(path, shapes)
    with torch.device("meta"):
        model = _build_segment_anything(architecture)
    _compare(path, {k: tuple(v.shape) for k, v in model.state_dict().items()}, shapes, f"SAM {architecture.variant}")
    return SamWeights(path, "segment_anything", architecture.variant, sha256_file(path), architecture)


def _check_huggingface(path: Path) -> SamWeights:
    config_file, weights_file = path / "config.json", path / "model.safetensors"
    if not config_file.is_file():
        raise UserError(f"--sam-weights {path} is a folder without config.json; {EXPECTED}")
    try:
        config = json.loads(config_file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise UserError(
            f"--sam-weights {config_file} is not readable JSON ({type(error).__name__}); {EXPECTED}"
        ) from None
    if not isinstance(config, dict) or config.get("model_type") != "sam":
        kind = config.get("model_type") if isinstance(config, dict) else None
        raise UserError(
            f"--sam-weights {config_file} describes a {kind or 'non-SAM'} model, not SAM (model_type sam); {EXPECTED}"
        )
    if not weights_file.is_file():
        raise UserError(f"--sam-weights {path} has config.json but no model.safetensors; {EXPECTED}")
    import torch
    from safetensors import safe_open
    from transformers import SamConfig, SamModel

    try:
        with safe_open(weights_file, "pt") as handle:
            shapes = {k: tuple(handle.get_slice(k).get_shape()) for k in handle.keys()}
        sam_config = SamConfig.from_dict(config)
    except Exception as error:  # a truncated file (safetensors checks every offset), a config SamConfig cannot read
        raise UserError(
            f"--sam-weights {weights_file} cannot be read as a Hugging Face SAM folder ({type(error).__name__}); {EXPECTED}"
        ) from None
    with torch.device("meta"):
        model = SamModel(sam_config)
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    for tied in getattr(model, "_tied_weights_keys", None) or {}:  # stored once, under the other name
        if tied not in shapes:
            expected.pop(tied, None)
    _compare(path, expected, shapes, "its config.json's SAM")
    vision: Any = sam_config.vision_config
    hidden = int(vision.hidden_size)
    variant = OFFICIAL_VARIANTS.get(hidden, (f"vit (hidden {hidden})",))[0]
    return SamWeights(path, "huggingface", variant, sha256_file(config_file)[:16] + sha256_file(weights_file))


def check_sam_weights(weights: str | Path) -> SamWeights:
    """The SAM weights at `weights`, checked completely, or a one-sentence UserError naming the file and what is expected."""
    path = Path(weights).expanduser()
    if not path.exists():
        raise UserError(f"--sam-weights {path} does not exist; {EXPECTED}")
    path = path.resolve()
    return _check_huggingface(path) if path.is_dir() else _check_segment_anything(path)


def preprocess(image: np.ndarray, input_size: int, device: torch.device) -> tuple[torch.Tensor, tuple[int, int]]:
    """A `[H,W,3]` uint8 RGB photo as SAM's input `[1,3,S,S]`: resized to long side S, normalised, padded."""
    import torch
    import torch.nn.functional as F

    height, width = image.shape[:2]
    resized = resized_size(height, width, input_size)
    x = torch.from_numpy(np.ascontiguousarray(image)).to(device).permute(2, 0, 1)[None].float()
    x = F.interpolate(x, size=resized, mode="bilinear", align_corners=False, antialias=True)
    mean = torch.tensor(PIXEL_MEAN, device=device).view(1, 3, 1, 1)
    std = torch.tensor(PIXEL_STD, device=device).view(1, 3, 1, 1)
    x = (x - mean) / std
    return F.pad(x, (0, input_size - resized[1], 0, input_size - resized[0])), resized


class _SamEmbedding:
    """The image half both adapters share: SAM's resize, normalise and pad, then the library's own encoder."""

    runtime: Runtime
    input_size: int

    def _encode(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def embed(self, image: np.ndarray) -> Embedded:
        import torch

        x, resized = preprocess(image, self.input_size, self.runtime.device)
        with torch.inference_mode(), self.runtime.autocast():
            embedding = self._encode(x).float()
        return Embedded(embedding, image.shape[:2], resized)


class SegmentAnythingSam(_SamEmbedding):
    """A segment_anything `Sam` as a PromptableSegmenter (its encoder, prompt encoder and decoder called directly)."""

    def __init__(self, sam: Any, runtime: Runtime) -> None:
        self.sam, self.runtime = sam.to(runtime.device).eval(), runtime
        self.input_size = int(sam.image_encoder.img_size)

    def _encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.sam.image_encoder(x)

    def decode(
        self, embedded: Embedded, boxes: torch.Tensor, points: torch.Tensor, labels: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        import torch

        device = self.runtime.device
        with torch.inference_mode(), self.runtime.autocast():
            sparse, dense = self.sam.prompt_encoder(
                points=(points.to(device), labels.to(device)), boxes=boxes.to(device), masks=None
            )
            logits, iou = self.sam.mask_decoder(
                image_embeddings=embedded.embedding,
                image_pe=self.sam.prompt_encoder.get_dense_pe(),
                sparse_prompt_embeddings=sparse,
                dense_prompt_embeddings=dense,
                multimask_output=False,
            )
        return logits[:, 0].float(), iou[:, 0].float()


class HuggingFaceSam(_SamEmbedding):
    """A `transformers.SamModel` as a PromptableSegmenter (one image, its prompts as the point batch)."""

    def __init__(self, model: Any, runtime: Runtime) -> None:
        self.model, self.runtime = model.to(runtime.device).eval(), runtime
        self.input_size = int(model.config.vision_config.image_size)

    def _encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.get_image_embeddings(x)

    def decode(
        self, embedded: Embedded, boxes: torch.Tensor, points: torch.Tensor, labels: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        import torch

        device = self.runtime.device
        with torch.inference_mode(), self.runtime.autocast():
            out = self.model(
                image_embeddings=embedded.embedding,
                input_points=points[None].to(device),
                input_labels=labels[None].to(device),
                input_boxes=boxes[None].to(device),
                multimask_output=False,
            )
        return out.pred_masks[0, :, 0].float(), out.iou_scores[0, :, 0].float()


def load_sam(weights: SamWeights, runtime: Runtime) -> SegmentAnythingSam | HuggingFaceSam:
    """The checked weights as a PromptableSegmenter on the runtime's device."""
    if weights.format == "huggingface":
        from transformers import SamModel

        return HuggingFaceSam(SamModel.from_pretrained(weights.path, local_files_only=True), runtime)
    assert weights.architecture is not None
    sam = _build_segment_anything(weights.architecture)
    sam.load_state_dict(read_state_dict(weights.path))
    return SegmentAnythingSam(sam, runtime)
