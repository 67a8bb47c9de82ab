"""Reading backbone weights from every format users have, into the official torch.hub key names.

Formats: an official torch.hub checkpoint (`dinov2_vits14_pretrain.pth`, `dinov3_vits16_pretrain_
lvd1689m-08c60483.pth`, a plain state dict), a Hugging Face model folder (`config.json` +
`*.safetensors`, as `facebook/dinov2-small` or `facebook/dinov3-vits16-pretrain-lvd1689m`), a lone
`.safetensors` file in either naming, or `"hub"` / `"hf:<repo>"` to download a folder (online users).
Conversion happens here, at the loading edge, so the model code knows only one naming. Files are
never unpickled into arbitrary objects (`torch.load(weights_only=True)`).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file

from common.errors import UserError
from common.fileio import sha256_file
from models.position import rope_periods

_HASH_CACHE: dict[tuple[str, int, int], str] = {}


@dataclass(frozen=True)
class OfficialWeights:
    """Backbone tensors under the official names, with where they came from."""

    state_dict: dict[str, torch.Tensor]
    family: str  # "dinov2" or "dinov3"
    sha256: str
    source: str
    rope_periods: torch.Tensor | None = None  # DINOv3: the periods the official model would use

    def architecture(self) -> tuple[str, int, int, int]:
        """(family, embed_dim, blocks, registers) read off the tensors, to match against backbone specs."""
        state = self.state_dict
        depth = len({k.split(".")[1] for k in state if k.startswith("blocks.")})
        registers = state.get("register_tokens", state.get("storage_tokens"))
        return self.family, state["cls_token"].shape[-1], depth, 0 if registers is None else registers.shape[1]

    def describe(self) -> str:
        """What the file holds, in words a user can match to a backbone name."""
        family, embed_dim, depth, registers = self.architecture()
        return f"a {family.upper()} ViT with embed_dim {embed_dim}, {depth} blocks, {registers} registers"


def weights_sha256(files: list[Path]) -> str:
    """SHA-256 of one weight file, or of the sorted list of (name, SHA-256) of several; cached per process."""
    digests = []
    for path in sorted(files):
        stat = path.stat()
        key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
        if key not in _HASH_CACHE:
            _HASH_CACHE[key] = sha256_file(path)
        digests.append((path.name, _HASH_CACHE[key]))
    if len(digests) == 1:
        return digests[0][1]
    return hashlib.sha256("".join(f"{name} {digest}\n" for name, digest in digests).encode()).hexdigest()


def download_from_hub(repo: str) -> Path:
    """A local snapshot of a Hugging Face model repository (gated DINOv3 ones need `hf auth login`)."""
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(repo, allow_patterns=["config.json", "*.safetensors"]))
    except Exception as error:  # network, authentication, offline mode: all fixable by the user
        raise UserError(
            f"could not download {repo} from the Hugging Face hub ({type(error).__name__}); check the "
            f"connection, accept the model's licence and run `hf auth login` for gated DINOv3 models, "
            f"or pass a downloaded file or folder with --weights"
        ) from None


def read_weights(weights: str | os.PathLike[str], hf_repo: str = "") -> OfficialWeights:
    """The tensors of `weights` (a path, "hub" for `hf_repo`, or "hf:<repo>") under official names."""
    weights = str(weights)
    if weights == "hub" or weights.startswith("hf:"):
        repo = hf_repo if weights == "hub" else weights[3:]
        if not repo:
            raise UserError("this backbone has no Hugging Face repository; pass a weights file with --weights")
        path = download_from_hub(repo)
    else:
        path = Path(weights).expanduser()
    if not path.exists():
        raise UserError(f"weights {weights} not found; pass an official .pth file or a Hugging Face model folder")
    config: dict = {}
    if path.is_dir():
        files = sorted(path.glob("*.safetensors")) or sorted(path.glob("pytorch_model*.bin"))
        if not files:
            raise UserError(f"{path} has no *.safetensors or pytorch_model.bin; is it a Hugging Face model folder?")
        if (path / "config.json").is_file():
            config = json.loads((path / "config.json").read_text())
    else:
        files = [path]
    state: dict[str, torch.Tensor] = {}
    for file in files:
        state.update(_read_tensors(file))
    official, family = to_official(_unwrap(state))
    periods = official.pop("rope_embed.periods", None)
    if family == "dinov3" and periods is None and config:
        periods = rope_periods(config["hidden_size"] // config["num_attention_heads"], config.get("rope_theta", 100.0))
    return OfficialWeights(official, family, weights_sha256(files), str(path), periods)


def _read_tensors(file: Path) -> dict[str, torch.Tensor]:
    try:
        if file.suffix == ".safetensors":
            return load_file(file, device="cpu")
        loaded = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as error:
        raise UserError(
            f"cannot read weights file {file} ({type(error).__name__}); it must be a PyTorch state dict "
            f"of plain tensors or a .safetensors file"
        ) from None
    if not isinstance(loaded, dict):
        raise UserError(f"{file} holds a {type(loaded).__name__}, not a state dict of tensors")
    return loaded


def _unwrap(state: dict) -> dict[str, torch.Tensor]:
    """The backbone's tensors of a checkpoint saved with a wrapper ('model', 'teacher', 'module.' ...)."""
    for key in ("model", "state_dict", "teacher"):
        if isinstance(state.get(key), dict):
            state = state[key]
    for prefix in ("module.", "backbone."):  # training checkpoints also hold heads: keep the backbone's
        if any(k.startswith(prefix) for k in state):
            state = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
    return {k: v for k, v in state.items() if isinstance(v, torch.Tensor)}


_HF_DINOV2 = [
    (r"^embeddings\.cls_token$", "cls_token"),
    (r"^embeddings\.mask_token$", "mask_token"),
    (r"^embeddings\.position_embeddings$", "pos_embed"),
    (r"^embeddings\.register_tokens$", "register_tokens"),
    (r"^embeddings\.patch_embeddings\.projection\.", "patch_embed.proj."),
    (r"^encoder\.layer\.(\d+)\.", r"blocks.\1."),
    (r"\.attention\.attention\.(query|key|value)\.", r".attn.\1."),
    (r"\.attention\.output\.dense\.", ".attn.proj."),
    (r"\.layer_scale(\d)\.lambda1$", r".ls\1.gamma"),
    (r"\.mlp\.weights_in\.", ".mlp.w12."),
    (r"\.mlp\.weights_out\.", ".mlp.w3."),
    (r"^layernorm\.", "norm."),
]
_HF_DINOV3 = [
    (r"^embeddings\.cls_token$", "cls_token"),
    (r"^embeddings\.mask_token$", "mask_token"),
    (r"^embeddings\.register_tokens$", "storage_tokens"),
    (r"^embeddings\.patch_embeddings\.", "patch_embed.proj."),
    (r"^(?:model\.)?layer\.(\d+)\.", r"blocks.\1."),
    (r"\.attention\.(q|k|v)_proj\.", r".attn.\1."),
    (r"\.attention\.o_proj\.", ".attn.proj."),
    (r"\.layer_scale(\d)\.lambda1$", r".ls\1.gamma"),
    (r"\.mlp\.gate_proj\.", ".mlp.w1."),
    (r"^norm\.", "norm."),
]


def to_official(state: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], str]:
    """`state` under the official torch.hub names, and its family; HF names are converted."""
    if "embeddings.patch_embeddings.projection.weight" in state:
        return _fuse_qkv(_rename(state, _HF_DINOV2), ("query", "key", "value")), "dinov2"
    if "embeddings.patch_embeddings.weight" in state:
        gated = any(".mlp.gate_proj." in k for k in state)
        renames = _HF_DINOV3 + (
            [(r"\.mlp\.up_proj\.", ".mlp.w2."), (r"\.mlp\.down_proj\.", ".mlp.w3.")]
            if gated
            else [(r"\.mlp\.up_proj\.", ".mlp.fc1."), (r"\.mlp\.down_proj\.", ".mlp.fc2.")]
        )
        official = _fuse_qkv(_rename(state, renames), ("q", "k", "v"))
        official["mask_token"] = official["mask_token"].reshape(1, -1)
        return official, "dinov3"
    if "patch_embed.proj.weight" in state and "cls_token" in state:
        return dict(state), "dinov3" if "storage_tokens" in state or "rope_embed.periods" in state else "dinov2"
    raise UserError(
        f"unrecognised weights: expected an official DINOv2/DINOv3 checkpoint or a Hugging Face "
        f"Dinov2/DINOv3 model, found keys like {', '.join(list(state)[:4])}"
    )


def _rename(state: dict[str, torch.Tensor], renames: list[tuple[str, str]]) -> dict[str, torch.Tensor]:
    out = {}
    for key, value in state.items():
        for pattern, replacement in renames:
            key = re.sub(pattern, replacement, key)
        out[key] = value
    return out


def _fuse_qkv(state: dict[str, torch.Tensor], names: tuple[str, str, str]) -> dict[str, torch.Tensor]:
    """Separate q/k/v projections -> the official fused `attn.qkv` (a missing k bias is zero, as masked)."""
    out = {k: v for k, v in state.items() if not re.search(rf"\.attn\.({'|'.join(names)})\.", k)}
    blocks = sorted({k.split(".attn.")[0] for k in state if re.search(rf"\.attn\.{names[0]}\.weight$", k)})
    for block in blocks:
        q, k, v = (f"{block}.attn.{n}" for n in names)
        out[f"{block}.attn.qkv.weight"] = torch.cat([state[f"{q}.weight"], state[f"{k}.weight"], state[f"{v}.weight"]])
        if f"{q}.bias" in state:
            k_bias = state.get(f"{k}.bias", torch.zeros_like(state[f"{q}.bias"]))
            out[f"{block}.attn.qkv.bias"] = torch.cat([state[f"{q}.bias"], k_bias, state[f"{v}.bias"]])
    return out
