"""The Chameleon VQ-GAN image tokenizer: model config, load/convert, reference-faithful preprocessing,
batched encoding to codes, code -> LM id mapping and the tokenizer fingerprint.

The model is ``transformers``' ``ChameleonVQVAE`` (encoder + quantizer; no decoder), always loaded
from a local folder: no hub access. Preprocessing follows Meta's reference
(``chameleon/inference/image_tokenizer.py``), not the HF image processor: grayscale -> three
identical channels -> ``x / 255.0 * 2 - 1``. Data (key maps, tiny config, offsets) live in
``manifests/tokenizer.yaml``. Facts and measurements: ``docs/tokenizer.md``.
"""

from __future__ import annotations

import hashlib
import io
import json
import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import yaml
from PIL import Image
from transformers import ChameleonVQVAE, ChameleonVQVAEConfig

import manifests

PROVENANCE_FILE = "cxr_tokenizer.json"
"""Sidecar in a model folder: ``{"trained": bool, "origin": str}``; the fingerprint reads it."""

PRECISIONS = ("fp32", "bf16")


def settings() -> dict:
    return manifests.load("tokenizer.yaml")


# ------------------------------------------------------------------ config


def chameleon_config(**overrides) -> ChameleonVQVAEConfig:
    """The Chameleon VQ-GAN architecture (HF defaults, ``attn_resolutions=[]``), with overrides.

    Raises on unknown keys: ``ChameleonVQVAEConfig`` silently ignores yaml spellings like ``ch``.
    """
    known = set(ChameleonVQVAEConfig().to_dict())
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise ValueError(f"not ChameleonVQVAEConfig keys: {unknown} (yaml names must be mapped first)")
    config = ChameleonVQVAEConfig(**{"attn_resolutions": [], **overrides})
    for key, value in overrides.items():
        actual = getattr(config, key)
        if (list(actual) if isinstance(actual, (list, tuple)) else actual) != (
            list(value) if isinstance(value, (list, tuple)) else value
        ):
            raise ValueError(f"ChameleonVQVAEConfig did not take {key}={value!r} (has {actual!r})")
    return config


def tiny_config() -> ChameleonVQVAEConfig:
    """A small config of the same model class (still 1024 codes per 512^2 image, from a 1024-entry
    codebook), for tests and the demo; why it is shaped so: ``manifests/tokenizer.yaml``."""
    return chameleon_config(**settings()["tiny_config"])


def config_from_vqgan_yaml(params: dict) -> ChameleonVQVAEConfig:
    """``vqgan.yaml["model"]["params"]`` (Meta / taming layout, ``ddconfig`` nested) -> HF config."""
    flat = {key: value for key, value in params.items() if key != "ddconfig"}
    flat.update(params.get("ddconfig", {}))
    names, ignored = settings()["config_keys"], set(settings()["ignored_yaml_keys"])
    unknown = sorted(set(flat) - set(names) - ignored)
    if unknown:
        raise ValueError(f"vqgan.yaml model.params has keys with no known meaning: {unknown}")
    mapped = {names[key]: value for key, value in flat.items() if key in names}
    missing = sorted({"n_embed", "embed_dim", "ch", "ch_mult", "z_channels"} - set(flat))
    if missing:
        raise ValueError(f"vqgan.yaml model.params lacks {missing}")
    return chameleon_config(**mapped)


# ------------------------------------------------------------------ model folders


def write_model_folder(model: ChameleonVQVAE, out_dir: str | Path, trained: bool, origin: str) -> Path:
    """Save an HF-format folder (config.json, model.safetensors) plus the provenance sidecar."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    (out / PROVENANCE_FILE).write_text(json.dumps({"trained": trained, "origin": origin}, indent=2) + "\n")
    return out


def write_tiny_model(out_dir: str | Path, seed: int = 0) -> Path:
    """A randomly initialised tiny model folder, marked untrained (its codes mean nothing)."""
    torch.manual_seed(seed)
    model = ChameleonVQVAE(tiny_config())
    return write_model_folder(
        model, out_dir, trained=False, origin=f"random initialisation of the tiny config, torch seed {seed}"
    )


def load_checkpoint_state(ckpt_path: str | Path, allow_unsafe_pickle: bool = False) -> dict:
    """The state dict of a Lightning/taming ``vqgan.ckpt``, loaded with ``weights_only=True``.

    A checkpoint holding non-tensor objects needs ``allow_unsafe_pickle`` (full unpickling: only for
    files you trust).
    """
    try:
        checkpoint = torch.load(ckpt_path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        if not allow_unsafe_pickle:
            raise RuntimeError(
                f"{ckpt_path} does not load with torch.load(weights_only=True): {error}. If you trust the "
                "file, rerun with --allow-unsafe-pickle."
            ) from error
        checkpoint = torch.load(ckpt_path, map_location="cpu", weights_only=False)
    state = checkpoint.get("state_dict", checkpoint) if isinstance(checkpoint, dict) else None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{ckpt_path}: expected a state dict of tensors (or {{'state_dict': ...}})")
    return state


def convert_checkpoint(
    ckpt_path: str | Path, yaml_path: str | Path, out_dir: str | Path, allow_unsafe_pickle: bool = False
) -> dict:
    """Meta's ``vqgan.ckpt`` + ``vqgan.yaml`` -> an HF-format model folder (encoder side only).

    Keeps the ``kept_prefixes`` of ``manifests/tokenizer.yaml``, drops the rest (decoder, loss) and
    loads strictly, so a missing or misnamed encoder key fails here. Returns a summary.
    """
    params = yaml.safe_load(Path(yaml_path).read_text())["model"]["params"]
    config = config_from_vqgan_yaml(params)
    state = load_checkpoint_state(ckpt_path, allow_unsafe_pickle)
    prefixes = tuple(settings()["kept_prefixes"])
    kept = {key: value for key, value in state.items() if key.startswith(prefixes)}
    dropped = sorted(key for key in state if not key.startswith(prefixes))
    model = ChameleonVQVAE(config)
    model.load_state_dict(kept, strict=True)
    digest = hashlib.sha256(Path(ckpt_path).read_bytes()).hexdigest()
    write_model_folder(model, out_dir, trained=True, origin=f"converted from {Path(ckpt_path).name} (sha256 {digest})")
    return {
        "out_dir": str(out_dir),
        "kept_keys": len(kept),
        "dropped_keys": len(dropped),
        "dropped_prefixes": sorted({key.split(".", 1)[0] for key in dropped}),
        "checkpoint_sha256": digest,
    }


def require_device(device: str) -> torch.device:
    """``torch.device(device)``; a CUDA request without usable CUDA raises (never falls back to CPU)."""
    resolved = torch.device(device)
    if resolved.type == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError(
                f"--device {device} was requested but CUDA is not usable here (torch {torch.__version__}, "
                f"built for CUDA {torch.version.cuda}, torch.cuda.is_available() is False). Refusing to fall "
                "back to CPU: run with --device cpu, or on a machine with a GPU and a CUDA build of torch."
            )
        index = resolved.index or 0
        if index >= torch.cuda.device_count():
            raise RuntimeError(f"--device {device}: only {torch.cuda.device_count()} CUDA device(s) visible")
    elif resolved.type != "cpu":
        raise ValueError(f"device must be 'cpu' or 'cuda[:N]', not {device!r}")
    return resolved


def load_model(model_dir: str | Path, device: str = "cpu") -> ChameleonVQVAE:
    """The model from a local HF-format folder, frozen, in eval mode, on ``device``."""
    target = require_device(device)
    model = ChameleonVQVAE.from_pretrained(str(model_dir), local_files_only=True)
    return model.to(target).eval().requires_grad_(False)  # type: ignore[arg-type]  # transformers' to() stub


# ------------------------------------------------------------------ preprocessing


def decode_gray(png: bytes | None) -> np.ndarray:
    """Image bytes from the images table (8-bit grayscale PNG) -> uint8 (H, W).

    Raises on missing bytes or another mode: the table holds 8-bit letterboxed images, and a 16-bit
    image would saturate under the reference's ``convert("RGB")``.
    """
    if not png:
        raise ValueError("image has no bytes")
    with Image.open(io.BytesIO(png)) as image:
        if image.mode != "L":
            raise ValueError(f"expected an 8-bit grayscale ('L') image, got mode {image.mode!r}")
        return np.asarray(image, dtype=np.uint8).copy()


def reference_resize_crop(gray: np.ndarray, size: int) -> np.ndarray:
    """The reference ``_vqgan_input_from`` geometry: shortest side -> ``size`` by LANCZOS with
    ``round()``ed sides, then a centre crop at ``(W - size) // 2, (H - size) // 2``. Identity on a
    ``size`` x ``size`` input (the letterboxed case)."""
    height, width = gray.shape
    if (height, width) == (size, size):
        return gray
    scale = size / min(height, width)
    image = Image.fromarray(gray).resize((round(scale * width), round(scale * height)), Image.Resampling.LANCZOS)
    x0, y0 = (image.width - size) // 2, (image.height - size) // 2
    return np.asarray(image.crop((x0, y0, x0 + size, y0 + size)), dtype=np.uint8)


def tokenizer_input(png: bytes | None, size: int | None = None) -> np.ndarray:
    """Images-table bytes -> the uint8 (size, size) array the tokenizer stage batches."""
    return reference_resize_crop(decode_gray(png), size or settings()["image_size"])


PIXEL_LUT = (np.arange(256, dtype=np.float64) / 255.0 * 2 - 1).astype(np.float32)
"""uint8 -> model input, exactly the reference ``np.array(img) / 255.0 * 2 - 1`` then ``.float()``."""


def reference_pixels(gray_batch: np.ndarray) -> np.ndarray:
    """uint8 (B, H, W) -> float32 (B, 3, H, W) in [-1, 1], three identical channels."""
    if gray_batch.dtype != np.uint8 or gray_batch.ndim != 3:
        raise ValueError(f"expected uint8 (B, H, W), got {gray_batch.dtype} {gray_batch.shape}")
    pixels = PIXEL_LUT[gray_batch]
    return np.repeat(pixels[:, None], 3, axis=1)


# ------------------------------------------------------------------ encoding


class Tokenizer:
    """A loaded model plus its device and precision; ``encode_codes`` is numpy in, numpy out, so the
    object works behind Beam's cross-process shared-model proxy (tensors never cross it).

    ``bf16`` runs the convolution trunk under bf16 autocast; ``quant_conv`` and the codebook
    distances always run in fp32.
    """

    def __init__(self, model: ChameleonVQVAE, device: torch.device, precision: str, channels_last: bool = True):
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, not {precision!r}")
        self.model = model
        self.device = device
        self.precision = precision
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        if channels_last:
            self.model.encoder.to(memory_format=torch.channels_last)  # type: ignore[call-overload]  # torch accepts it
        self.lut = torch.from_numpy(PIXEL_LUT).to(device)

    def encode_codes(self, gray_batch: np.ndarray, fixed_batch: int | None = None) -> np.ndarray:
        """uint8 (B, H, W) grayscale -> int16 (B, H/16 * W/16) codes, row-major over the grid.

        With ``fixed_batch`` every model call has exactly that many images (chunks; the last one
        zero-padded): CPU convolution kernels, and so the last bits of near-tied distances, depend on
        the batch shape, and a fixed shape makes codes independent of how images were grouped.
        """
        if gray_batch.dtype != np.uint8 or gray_batch.ndim != 3:
            raise ValueError(f"expected uint8 (B, H, W), got {gray_batch.dtype} {gray_batch.shape}")
        if fixed_batch:
            chunks = []
            for start in range(0, len(gray_batch), fixed_batch):
                chunk = gray_batch[start : start + fixed_batch]
                padded = np.zeros((fixed_batch, *chunk.shape[1:]), np.uint8)
                padded[: len(chunk)] = chunk
                chunks.append(self.encode_codes(padded)[: len(chunk)])
            return np.concatenate(chunks)
        batch = len(gray_batch)
        with torch.inference_mode():
            gray = torch.from_numpy(np.ascontiguousarray(gray_batch)).to(self.device, non_blocking=True)
            pixels = self.lut[gray.long()].unsqueeze(1).expand(-1, 3, -1, -1)
            pixels = pixels.contiguous(memory_format=self.memory_format)
            with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.precision == "bf16"):
                hidden = self.model.encoder(pixels)
            latents = self.model.quant_conv(hidden.float())
            _, _, indices = self.model.quantize(latents)
            return indices.view(batch, -1).to(torch.int16).cpu().numpy()


def default_precision(device: str) -> str:
    """bf16 on CUDA, fp32 on CPU (reference precision; CPU bf16 has no tensor cores to gain from)."""
    return "bf16" if torch.device(device).type == "cuda" else "fp32"


def load_tokenizer(model_dir: str | Path, device: str = "cpu", precision: str | None = None) -> Tokenizer:
    return Tokenizer(load_model(model_dir, device), torch.device(device), precision or default_precision(device))


# ------------------------------------------------------------------ ids and fingerprint


@dataclass(frozen=True)
class LmIdMapping:
    """code -> LM vocabulary id (``ids[code]``) and where the mapping came from."""

    ids: np.ndarray  # int32 (num_embeddings,)
    source: str

    def __call__(self, codes: np.ndarray) -> np.ndarray:
        return self.ids[codes.astype(np.int64)]


def image_code_of_token(name: str, prefix: str) -> int | None:
    """``IMGIMGBCZ`` -> 12 (letters A..J are digits 0..9); None for other tokens."""
    if not (name.startswith(prefix) and name.endswith("Z")) or len(name) <= len(prefix) + 1:
        return None
    letters = name[len(prefix) : -1]
    if not all("A" <= letter <= "J" for letter in letters):
        return None
    return int("".join(str(ord(letter) - ord("A")) for letter in letters))


def lm_id_mapping(num_embeddings: int, tokenizer_file: str | Path | None = None) -> LmIdMapping:
    """The code -> LM id map from Chameleon's ``text_tokenizer.json`` when given (checked to be a
    bijection onto ``num_embeddings`` codes); otherwise the documented ``code + 4`` default."""
    config = settings()
    if tokenizer_file is None:
        offset = config["default_lm_id_offset"]
        return LmIdMapping(
            np.arange(num_embeddings, dtype=np.int32) + offset,
            f"offset-{offset}-default (not checked against a tokenizer file)",
        )
    data = Path(tokenizer_file).read_bytes()
    vocab = json.loads(data)["model"]["vocab"]
    ids = np.full(num_embeddings, -1, dtype=np.int64)
    for name, token_id in vocab.items():
        code = image_code_of_token(name, config["image_token_prefix"])
        if code is None:
            continue
        if not 0 <= code < num_embeddings or ids[code] != -1:
            raise ValueError(f"{tokenizer_file}: image token {name} gives code {code}, out of range or repeated")
        ids[code] = token_id
    missing = np.flatnonzero(ids < 0)
    if len(missing):
        raise ValueError(
            f"{tokenizer_file}: {len(missing)} of {num_embeddings} codes have no image token "
            f"(first {missing[:5].tolist()})"
        )
    if len(np.unique(ids)) != num_embeddings:
        raise ValueError(f"{tokenizer_file}: image tokens share vocabulary ids")
    return LmIdMapping(ids.astype(np.int32), f"tokenizer-file sha256:{hashlib.sha256(data).hexdigest()}")


def weights_sha256(model: ChameleonVQVAE) -> str:
    """SHA-256 over the state dict (sorted names, dtype, shape, bytes): independent of the file format."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        array = tensor.detach().cpu().contiguous()
        digest.update(f"{name}|{array.dtype}|{tuple(array.shape)}|".encode())
        digest.update(array.view(torch.uint8).numpy().tobytes() if array.numel() else b"")
    return digest.hexdigest()


def fingerprint(
    model_dir: str | Path, precision: str, vocabulary: str | Path | None = None
) -> tuple[dict, LmIdMapping]:
    """What determines the codes and ids (config, weights hash, precision, preprocessing, id map),
    and the code -> LM id map itself.

    ``id`` is a short form written on every row; it starts with ``untrained-`` for a random model.
    """
    model = ChameleonVQVAE.from_pretrained(str(model_dir), local_files_only=True)
    mapping = lm_id_mapping(model.config.num_embeddings, vocabulary)
    provenance_path = Path(model_dir) / PROVENANCE_FILE
    provenance = (
        json.loads(provenance_path.read_text())
        if provenance_path.is_file()
        else {"trained": None, "origin": "unknown (no provenance file in the model folder)"}
    )
    config = model.config.to_dict()
    architecture = {
        key: (list(config[key]) if isinstance(config[key], tuple) else config[key])
        for key in sorted({*settings()["config_keys"].values(), "attn_type"})
        if key in config
    }
    body = {
        "architecture": architecture,
        "weights_sha256": weights_sha256(model),
        "precision": precision,
        "preprocessing": "8-bit gray -> 3 channels; LANCZOS shortest side 512 + centre crop; x / 255 * 2 - 1",
        "lm_ids": mapping.source,
    }
    digest = hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:16]
    label = {True: "chameleon-vqgan", False: "untrained", None: "unknown-provenance"}[provenance["trained"]]
    return {
        "id": f"{label}-{digest}",
        "trained": provenance["trained"],
        "origin": provenance["origin"],
        **body,
    }, mapping
