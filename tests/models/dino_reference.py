"""An independent reference of the official DINOv2 / DINOv3 forward, written from the official code.

Plain functions over an official-format state dict (no timm, no transformers, nothing from
`models/`), following facebookresearch/dinov2 `DinoVisionTransformer` (interpolate_pos_encoding,
prepare_tokens_with_masks, Block, get_intermediate_layers(reshape=True, norm=True)) and
facebookresearch/dinov3 (RopePositionEmbedding, SelfAttention.apply_rope, LinearKMaskedBias).
Also writes random checkpoints in the official formats, as the tests' stand-in for real files.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

Tensor = torch.Tensor


def random_official_state_dict(
    family: str,
    embed_dim: int,
    depth: int,
    heads: int,
    registers: int,
    swiglu: bool = False,
    seed: int = 0,
    ffn_ratio: float | None = None,
    align: int = 8,
    qkv_bias: bool = True,
    device: str = "cpu",
) -> dict[str, Tensor]:
    """Random tensors under the official torch.hub key names and shapes (DINOv2 or DINOv3).

    Shapes follow the official constructors: DINOv2's fused SwiGLU (ViT-g) and DINOv3's SwiGLUFFN
    (`ffn_ratio`, hidden aligned to `align`). `device="meta"` gives shapes only (for the large models).
    """
    g = torch.Generator().manual_seed(seed)
    patch = 14 if family == "dinov2" else 16
    d = embed_dim
    ffn_ratio = ffn_ratio or (6.0 if family == "dinov3" and swiglu else 4.0)

    def rand(*shape: int, scale: float = 1.0, mean: float = 0.0) -> Tensor:
        if device == "meta":
            return torch.empty(*shape, device="meta")
        return mean + scale * torch.randn(*shape, generator=g)

    def linear(name: str, out_f: int, in_f: int, bias: bool = True) -> None:
        sd[f"{name}.weight"] = rand(out_f, in_f, scale=in_f**-0.5)
        if bias:
            sd[f"{name}.bias"] = rand(out_f, scale=0.1)

    sd: dict[str, Tensor] = {"cls_token": rand(1, 1, d), "mask_token": rand(1, d, scale=0.0)}
    sd["patch_embed.proj.weight"] = rand(d, 3, patch, patch, scale=(3 * patch * patch) ** -0.5)
    sd["patch_embed.proj.bias"] = rand(d, scale=0.1)
    if family == "dinov2":
        sd["pos_embed"] = rand(1, 1 + 37 * 37, d, scale=0.5)
        if registers:
            sd["register_tokens"] = rand(1, registers, d)
    else:
        sd["storage_tokens"] = rand(1, registers, d)
        sd["rope_embed.periods"] = 100.0 ** (2 * torch.arange(d // heads // 4, dtype=torch.float32) / (d // heads // 2))
    for i in range(depth):
        b = f"blocks.{i}"
        for norm in ("norm1", "norm2"):
            sd[f"{b}.{norm}.weight"] = rand(d, scale=0.1, mean=1.0)
            sd[f"{b}.{norm}.bias"] = rand(d, scale=0.1)
        linear(f"{b}.attn.qkv", 3 * d, d, bias=qkv_bias)
        if family == "dinov3" and qkv_bias:
            mask = torch.ones(3 * d)
            mask[d : 2 * d] = 0
            sd[f"{b}.attn.qkv.bias_mask"] = mask
        linear(f"{b}.attn.proj", d, d)
        sd[f"{b}.ls1.gamma"] = rand(d, scale=0.1, mean=0.5)
        sd[f"{b}.ls2.gamma"] = rand(d, scale=0.1, mean=0.5)
        hidden = int(d * ffn_ratio)
        if not swiglu:
            linear(f"{b}.mlp.fc1", hidden, d)
            linear(f"{b}.mlp.fc2", d, hidden)
        elif family == "dinov2":  # SwiGLUFFNFused: (int(hidden * 2/3) + 7) // 8 * 8, w1|w2 packed in w12
            hidden = (int(hidden * 2 / 3) + 7) // 8 * 8
            linear(f"{b}.mlp.w12", 2 * hidden, d)
            linear(f"{b}.mlp.w3", d, hidden)
        else:  # DINOv3 SwiGLUFFN: separate w1, w2, w3
            hidden = int(hidden * 2 / 3)
            hidden += -hidden % align
            linear(f"{b}.mlp.w1", hidden, d)
            linear(f"{b}.mlp.w2", hidden, d)
            linear(f"{b}.mlp.w3", d, hidden)
    sd["norm.weight"] = rand(d, scale=0.1, mean=1.0)
    sd["norm.bias"] = rand(d, scale=0.1)
    return sd


def _dinov2_pos_embed(pos_embed: Tensor, h0: int, w0: int, antialias: bool, offset: float) -> Tensor:
    """`DinoVisionTransformer.interpolate_pos_encoding` of facebookresearch/dinov2 (current version)."""
    N = pos_embed.shape[1] - 1
    if h0 * w0 == N and h0 == w0:
        return pos_embed
    pos_embed = pos_embed.float()
    class_pos_embed = pos_embed[:, 0]
    patch_pos_embed = pos_embed[:, 1:]
    dim = pos_embed.shape[-1]
    M = int(math.sqrt(N))
    kwargs = {}
    if offset:
        kwargs["scale_factor"] = (float(h0 + offset) / M, float(w0 + offset) / M)
    else:
        kwargs["size"] = (h0, w0)
    patch_pos_embed = F.interpolate(
        patch_pos_embed.reshape(1, M, M, dim).permute(0, 3, 1, 2), mode="bicubic", antialias=antialias, **kwargs
    )
    assert (h0, w0) == patch_pos_embed.shape[-2:]
    patch_pos_embed = patch_pos_embed.permute(0, 2, 3, 1).view(1, -1, dim)
    return torch.cat((class_pos_embed.unsqueeze(0), patch_pos_embed), dim=1)


def _dinov3_rope(periods: Tensor, H: int, W: int) -> tuple[Tensor, Tensor]:
    """`RopePositionEmbedding.forward` of facebookresearch/dinov3, eval mode, normalize_coords="separate"."""
    dd = {"device": periods.device, "dtype": torch.float32}
    coords_h = torch.arange(0.5, H, **dd) / H
    coords_w = torch.arange(0.5, W, **dd) / W
    coords = torch.stack(torch.meshgrid(coords_h, coords_w, indexing="ij"), dim=-1).flatten(0, 1)
    coords = 2.0 * coords - 1.0
    angles = 2 * math.pi * coords[:, :, None] / periods[None, None, :]
    angles = angles.flatten(1, 2).tile(2)
    return torch.sin(angles), torch.cos(angles)


def _rope_apply(x: Tensor, sin: Tensor, cos: Tensor) -> Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return x * cos + torch.cat([-x2, x1], dim=-1) * sin


def _attention(sd: dict[str, Tensor], b: str, x: Tensor, heads: int, rope: tuple[Tensor, Tensor] | None) -> Tensor:
    B, N, C = x.shape
    bias = sd.get(f"{b}.attn.qkv.bias")
    if bias is not None and f"{b}.attn.qkv.bias_mask" in sd:
        bias = bias * sd[f"{b}.attn.qkv.bias_mask"]
    qkv = F.linear(x, sd[f"{b}.attn.qkv.weight"], bias).reshape(B, N, 3, heads, C // heads).permute(2, 0, 3, 1, 4)
    q, k, v = qkv[0], qkv[1], qkv[2]
    if rope is not None:
        sin, cos = rope
        prefix = N - sin.shape[-2]
        q = torch.cat((q[:, :, :prefix], _rope_apply(q[:, :, prefix:], sin, cos)), dim=-2)
        k = torch.cat((k[:, :, :prefix], _rope_apply(k[:, :, prefix:], sin, cos)), dim=-2)
    attn = ((q * (C // heads) ** -0.5) @ k.transpose(-2, -1)).softmax(dim=-1)
    out = (attn @ v).transpose(1, 2).reshape(B, N, C)
    return F.linear(out, sd[f"{b}.attn.proj.weight"], sd[f"{b}.attn.proj.bias"])


def _mlp(sd: dict[str, Tensor], b: str, x: Tensor) -> Tensor:
    if f"{b}.mlp.w12.weight" in sd:
        x1, x2 = F.linear(x, sd[f"{b}.mlp.w12.weight"], sd[f"{b}.mlp.w12.bias"]).chunk(2, dim=-1)
        return F.linear(F.silu(x1) * x2, sd[f"{b}.mlp.w3.weight"], sd[f"{b}.mlp.w3.bias"])
    if f"{b}.mlp.w1.weight" in sd:
        x1 = F.linear(x, sd[f"{b}.mlp.w1.weight"], sd[f"{b}.mlp.w1.bias"])
        x2 = F.linear(x, sd[f"{b}.mlp.w2.weight"], sd[f"{b}.mlp.w2.bias"])
        return F.linear(F.silu(x1) * x2, sd[f"{b}.mlp.w3.weight"], sd[f"{b}.mlp.w3.bias"])
    hidden = F.gelu(F.linear(x, sd[f"{b}.mlp.fc1.weight"], sd[f"{b}.mlp.fc1.bias"]))
    return F.linear(hidden, sd[f"{b}.mlp.fc2.weight"], sd[f"{b}.mlp.fc2.bias"])


def _layer_norm(sd: dict[str, Tensor], name: str, x: Tensor, eps: float) -> Tensor:
    return F.layer_norm(x, x.shape[-1:], sd[f"{name}.weight"], sd[f"{name}.bias"], eps)


@torch.no_grad()
def official_features(
    sd: dict[str, Tensor],
    images: Tensor,
    layers: list[int],
    heads: int,
    family: str,
    antialias: bool = False,
    offset: float = 0.1,
) -> list[Tensor]:
    """`get_intermediate_layers(images, n=layers, reshape=True, norm=True)` of the official model.

    DINOv2: `antialias=False, offset=0.1` for the original models, `True, 0.0` for the register ones.
    """
    patch = sd["patch_embed.proj.weight"].shape[-1]
    B, _, H, W = images.shape
    h0, w0 = H // patch, W // patch
    x = F.conv2d(images, sd["patch_embed.proj.weight"], sd["patch_embed.proj.bias"], stride=patch)
    x = x.flatten(2).transpose(1, 2)
    if family == "dinov2":
        eps, rope = 1e-6, None
        x = torch.cat((sd["cls_token"].expand(B, -1, -1), x), dim=1)
        x = x + _dinov2_pos_embed(sd["pos_embed"], h0, w0, antialias, offset)
        if "register_tokens" in sd:
            x = torch.cat((x[:, :1], sd["register_tokens"].expand(B, -1, -1), x[:, 1:]), dim=1)
        prefix = 1 + (sd["register_tokens"].shape[1] if "register_tokens" in sd else 0)
    else:
        eps, rope = 1e-5, _dinov3_rope(sd["rope_embed.periods"].float(), h0, w0)
        cls = sd["cls_token"] + 0 * sd["mask_token"]
        x = torch.cat((cls.expand(B, -1, -1), sd["storage_tokens"].expand(B, -1, -1), x), dim=1)
        prefix = 1 + sd["storage_tokens"].shape[1]
    outputs = []
    depth = len({k.split(".")[1] for k in sd if k.startswith("blocks.")})
    for i in range(depth):
        b = f"blocks.{i}"
        x = x + sd[f"{b}.ls1.gamma"] * _attention(sd, b, _layer_norm(sd, f"{b}.norm1", x, eps), heads, rope)
        x = x + sd[f"{b}.ls2.gamma"] * _mlp(sd, b, _layer_norm(sd, f"{b}.norm2", x, eps))
        if i in layers:
            out = _layer_norm(sd, "norm", x, eps)[:, prefix:]
            outputs.append(out.reshape(B, h0, w0, -1).permute(0, 3, 1, 2).contiguous())
    return outputs
