"""The VQ-GAN tokenizer's pure parts: preprocessing pinned to the reference formula, encoding, the
Meta checkpoint conversion (against an independent taming-style reference encoder), id maps,
fingerprints and the CUDA guard."""

import argparse
import io
import json

import numpy as np
import pytest
import torch
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image
from torch import nn

from transforms import vqgan

RNG = np.random.default_rng(7)


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    return vqgan.write_tiny_model(tmp_path_factory.mktemp("tiny"), seed=0)


def gray_images(n, size=512):
    return RNG.integers(0, 256, (n, size, size), dtype=np.uint8)


# ------------------------------------------------------------------ preprocessing


def literal_reference(image: Image.Image, target: int = 512) -> torch.Tensor:
    """Meta's image_tokenizer.py steps, spelled out: whiten transparency, resize + crop, normalise."""
    if image.mode != "RGB":
        image = image.convert("RGBA")
        assert np.asarray(image)[..., 3].min() == 255  # no transparency: plain convert("RGB")
        image = image.convert("RGB")
    scale = target / min(image.size)
    image = image.resize((round(scale * image.size[0]), round(scale * image.size[1])), Image.LANCZOS)
    x0, y0 = (image.width - target) // 2, (image.height - target) // 2
    image = image.crop((x0, y0, x0 + target, y0 + target))
    return torch.from_numpy(np.array(image) / 255.0 * 2 - 1).permute(2, 0, 1).float()


def test_pixel_values_are_exactly_the_reference_formula():
    values = vqgan.reference_pixels(np.array([[[0, 1, 127, 128, 254, 255]]], dtype=np.uint8))
    assert values.dtype == np.float32 and values.shape == (1, 3, 1, 6)
    expected = np.array(
        [-1.0, -0.9921568632125854, -0.003921568859368563, 0.003921568859368563, 0.9921568632125854, 1.0],
        dtype=np.float32,
    )
    np.testing.assert_array_equal(values[0, :, 0], np.stack([expected] * 3))
    # float32 x / 127.5 - 1 (a common shortcut) is off in the last bits at 127 and 128
    shortcut = torch.tensor([0, 1, 127, 128, 254, 255], dtype=torch.uint8).float() / 127.5 - 1
    assert (shortcut.numpy() != expected).tolist() == [False, False, True, True, False, False]
    # bit-exact against the reference on a whole image, three identical channels
    gray = gray_images(1)[0]
    reference = literal_reference(Image.fromarray(gray)).numpy()
    assert np.array_equal(vqgan.reference_pixels(gray[None])[0], reference)
    # the HF image processor's x * 0.0078 - 1 is not this formula
    assert not np.array_equal(reference[0], (gray * np.float32(0.0078) - 1).astype(np.float32))


@settings(max_examples=15, deadline=None)
@given(width=st.integers(16, 900), height=st.integers(16, 900))
def test_resize_and_crop_match_the_reference(width, height):
    gray = np.random.default_rng(width * 1000 + height).integers(0, 256, (height, width), dtype=np.uint8)
    ours = vqgan.reference_pixels(vqgan.reference_resize_crop(gray, 512)[None])[0]
    assert np.array_equal(ours, literal_reference(Image.fromarray(gray)).numpy())


def png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def test_decode_accepts_8bit_gray_and_refuses_others():
    gray = gray_images(1, 64)[0]
    assert np.array_equal(vqgan.tokenizer_input(png(gray), 64), gray)
    with pytest.raises(ValueError, match="mode 'I;16'"):
        vqgan.decode_gray(png(gray.astype(np.uint16) * 257))
    with pytest.raises(ValueError, match="no bytes"):
        vqgan.decode_gray(None)
    with pytest.raises(OSError):  # Pillow: cannot identify image file
        vqgan.decode_gray(b"\x89PNG\r\n\x1a\n truncated")


# ------------------------------------------------------------------ encoding


def test_direct_encode_equals_hf_encode_on_reference_pixels(tiny_dir):
    tokenizer = vqgan.load_tokenizer(tiny_dir)
    images = gray_images(3)
    codes = tokenizer.encode_codes(images)
    assert codes.shape == (3, 1024) and codes.dtype == np.int16
    assert codes.min() >= 0 and codes.max() < 1024 and len(np.unique(codes)) > 50  # tiny codebook: 1024
    with torch.inference_mode():
        output = tokenizer.model.encode(torch.from_numpy(vqgan.reference_pixels(images)))
    assert np.array_equal(codes, output.image_tokens.view(3, 1024).numpy())
    # batching does not change codes
    assert np.array_equal(codes[1:2], tokenizer.encode_codes(images[1:2]))


def test_bf16_trunk_keeps_shapes_and_quantizes_in_fp32(tiny_dir):
    model = vqgan.load_model(tiny_dir)
    bf16 = vqgan.Tokenizer(model, torch.device("cpu"), "bf16").encode_codes(gray_images(2))
    assert bf16.shape == (2, 1024) and bf16.dtype == np.int16
    assert model.quantize.embedding.weight.dtype == torch.float32
    with pytest.raises(ValueError, match="precision"):
        vqgan.Tokenizer(model, torch.device("cpu"), "fp16")


def forward_flops(model) -> int:
    """2 x the multiply-adds of every convolution on one 512^2 image, plus the codebook distances."""
    macs = 0

    def count(module, _inputs, output):
        nonlocal macs
        macs += output.numel() * module.in_channels // module.groups * module.kernel_size[0] * module.kernel_size[1]

    hooks = [m.register_forward_hook(count) for m in model.modules() if isinstance(m, nn.Conv2d)]
    with torch.inference_mode():
        model.encode(torch.zeros(1, 3, 512, 512))
    for hook in hooks:
        hook.remove()
    return 2 * (macs + 1024 * model.config.num_embeddings * model.config.embed_dim)


def test_tiny_model_keeps_the_real_grid_at_a_fraction_of_the_cost(tiny_dir):
    """The demo and test model: Chameleon's class, resolution and number of levels (four stride-2
    downsamples: 512^2 -> 32 x 32 codes), at under 1% of the real model's forward FLOPs, so `make demo`
    tokenizes its images in seconds on a CPU (manifests/tokenizer.yaml, tiny_config)."""
    model = vqgan.load_model(tiny_dir)
    tiny, real = model.config, vqgan.chameleon_config()
    assert type(model).__name__ == "ChameleonVQVAE"
    assert tiny.resolution == real.resolution == 512
    assert len(tiny.channel_multiplier) == len(real.channel_multiplier) == 5
    assert forward_flops(model) < 0.01 * float(vqgan.settings()["flops_per_image"])  # 2.2 of 554 GFLOP


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without CUDA")
def test_cuda_request_without_cuda_fails_clearly(tiny_dir):
    with pytest.raises(RuntimeError, match="Refusing to fall back to CPU"):
        vqgan.load_tokenizer(tiny_dir, device="cuda")
    with pytest.raises(ValueError, match="'cpu' or 'cuda"):
        vqgan.require_device("mps")


# ------------------------------------------------------------------ Meta checkpoint conversion


class RefResnetBlock(nn.Module):
    """taming.modules.diffusionmodules.model.ResnetBlock with temb_channels=0."""

    def __init__(self, c_in, c_out):
        super().__init__()
        self.norm1 = nn.GroupNorm(32, c_in, eps=1e-6)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, 1, 1)
        self.norm2 = nn.GroupNorm(32, c_out, eps=1e-6)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1)
        if c_in != c_out:
            self.nin_shortcut = nn.Conv2d(c_in, c_out, 1)

    def forward(self, x):
        h = self.conv1(torch.nn.functional.silu(self.norm1(x)))
        h = self.conv2(torch.nn.functional.silu(self.norm2(h)))
        return (self.nin_shortcut(x) if hasattr(self, "nin_shortcut") else x) + h


class RefAttnBlock(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.norm = nn.GroupNorm(32, c, eps=1e-6)
        self.q, self.k, self.v, self.proj_out = (nn.Conv2d(c, c, 1) for _ in range(4))

    def forward(self, x):
        h = self.norm(x)
        q, k, v = self.q(h), self.k(h), self.v(h)
        b, c, hh, ww = q.shape
        q = q.reshape(b, c, hh * ww).permute(0, 2, 1)
        weights = torch.softmax(torch.bmm(q, k.reshape(b, c, hh * ww)) * c**-0.5, dim=2)
        out = torch.bmm(v.reshape(b, c, hh * ww), weights.permute(0, 2, 1)).reshape(b, c, hh, ww)
        return x + self.proj_out(out)


class RefEncoder(nn.Module):
    """taming Encoder (attn_resolutions=[], mid attention always present, asymmetric downsampling)."""

    def __init__(self, ch, ch_mult, num_res_blocks, z_channels):
        super().__init__()
        self.conv_in = nn.Conv2d(3, ch, 3, 1, 1)
        self.down = nn.ModuleList()
        c_in = ch
        for level, mult in enumerate(ch_mult):
            stage = nn.Module()
            stage.block = nn.ModuleList()
            for _ in range(num_res_blocks):
                stage.block.append(RefResnetBlock(c_in, ch * mult))
                c_in = ch * mult
            if level != len(ch_mult) - 1:
                stage.downsample = nn.Module()
                stage.downsample.conv = nn.Conv2d(c_in, c_in, 3, 2, 0)
            self.down.append(stage)
        self.mid = nn.Module()
        self.mid.block_1, self.mid.attn_1, self.mid.block_2 = (
            RefResnetBlock(c_in, c_in),
            RefAttnBlock(c_in),
            RefResnetBlock(c_in, c_in),
        )
        self.norm_out = nn.GroupNorm(32, c_in, eps=1e-6)
        self.conv_out = nn.Conv2d(c_in, z_channels, 3, 1, 1)

    def forward(self, x):
        h = self.conv_in(x)
        for stage in self.down:
            for block in stage.block:
                h = block(h)
            if hasattr(stage, "downsample"):
                h = stage.downsample.conv(torch.nn.functional.pad(h, (0, 1, 0, 1)))
        h = self.mid.block_2(self.mid.attn_1(self.mid.block_1(h)))
        return self.conv_out(torch.nn.functional.silu(self.norm_out(h)))


class RefVQModel(nn.Module):
    """The encode half of taming's VQModel with VectorQuantizer2 (argmin of squared distances)."""

    def __init__(self, ddconfig, n_embed, embed_dim):
        super().__init__()
        self.encoder = RefEncoder(
            ddconfig["ch"], ddconfig["ch_mult"], ddconfig["num_res_blocks"], ddconfig["z_channels"]
        )
        self.quant_conv = nn.Conv2d(ddconfig["z_channels"], embed_dim, 1)
        self.post_quant_conv = nn.Conv2d(embed_dim, ddconfig["z_channels"], 1)
        self.quantize = nn.Module()
        self.quantize.embedding = nn.Embedding(n_embed, embed_dim)

    def encode_indices(self, x):
        z = self.quant_conv(self.encoder(x)).permute(0, 2, 3, 1).reshape(-1, self.quantize.embedding.weight.shape[1])
        e = self.quantize.embedding.weight
        d = (z**2).sum(1, keepdim=True) + (e**2).sum(1) - 2 * z @ e.t()
        return d.argmin(1).view(x.shape[0], -1)


META_PARAMS = {
    "embed_dim": 8,
    "n_embed": 512,
    "ddconfig": {
        "double_z": False,
        "z_channels": 8,
        "resolution": 512,
        "in_channels": 3,
        "out_ch": 3,
        "ch": 32,
        "ch_mult": [1, 1, 2, 2, 4],
        "num_res_blocks": 1,
        "attn_resolutions": [],
        "dropout": 0.0,
    },
    "lossconfig": {"target": "taming.modules.losses.vqperceptual.VQLPIPSWithDiscriminator"},
}


def write_meta_checkpoint(folder, extra=None):
    torch.manual_seed(3)
    reference = RefVQModel(META_PARAMS["ddconfig"], META_PARAMS["n_embed"], META_PARAMS["embed_dim"]).eval()
    state = dict(reference.state_dict())
    state["decoder.conv_in.weight"] = torch.randn(32, 8, 3, 3)  # decoder and loss keys convert must drop
    state["decoder.up.0.block.0.norm1.bias"] = torch.randn(32)
    state["loss.discriminator.main.0.weight"] = torch.randn(4, 3, 4, 4)
    checkpoint = {"state_dict": state, "epoch": 3, **(extra or {})}
    torch.save(checkpoint, folder / "vqgan.ckpt")
    (folder / "vqgan.yaml").write_text(
        yaml.safe_dump({"model": {"target": "taming.models.vqgan.VQModel", "params": META_PARAMS}})
    )
    return reference


def test_converted_meta_checkpoint_loads_strictly_and_gives_reference_codes(tmp_path):
    reference = write_meta_checkpoint(tmp_path)
    summary = vqgan.convert_checkpoint(tmp_path / "vqgan.ckpt", tmp_path / "vqgan.yaml", tmp_path / "hf")
    assert summary["dropped_prefixes"] == ["decoder", "loss"] and summary["dropped_keys"] == 3
    tokenizer = vqgan.load_tokenizer(tmp_path / "hf")
    assert tokenizer.model.config.num_embeddings == 512 and tokenizer.model.config.base_channels == 32
    images = gray_images(2, 256)
    with torch.inference_mode():
        expected = reference.encode_indices(torch.from_numpy(vqgan.reference_pixels(images))).numpy()
    assert np.array_equal(tokenizer.encode_codes(images), expected)
    fingerprint, _ = vqgan.fingerprint(tmp_path / "hf", "fp32")
    assert fingerprint["id"].startswith("chameleon-vqgan-") and fingerprint["trained"] is True


def test_convert_is_strict_and_refuses_pickles_by_default(tmp_path):
    write_meta_checkpoint(tmp_path, extra={"hparams": argparse.Namespace(lr=1e-4)})
    with pytest.raises(RuntimeError, match=r"(?s)weights_only=True.*--allow-unsafe-pickle"):
        vqgan.convert_checkpoint(tmp_path / "vqgan.ckpt", tmp_path / "vqgan.yaml", tmp_path / "hf")
    vqgan.convert_checkpoint(
        tmp_path / "vqgan.ckpt", tmp_path / "vqgan.yaml", tmp_path / "hf", allow_unsafe_pickle=True
    )
    state = torch.load(tmp_path / "vqgan.ckpt", weights_only=False)["state_dict"]
    del state["encoder.conv_out.bias"]
    torch.save({"state_dict": state}, tmp_path / "broken.ckpt")
    with pytest.raises(RuntimeError, match=r"conv_out.bias"):
        vqgan.convert_checkpoint(tmp_path / "broken.ckpt", tmp_path / "vqgan.yaml", tmp_path / "hf2")


def test_yaml_names_are_mapped_and_unknown_names_refused():
    config = vqgan.config_from_vqgan_yaml(META_PARAMS)
    assert (config.base_channels, config.num_embeddings, config.latent_channels) == (32, 512, 8)
    assert list(config.channel_multiplier) == [1, 1, 2, 2, 4]
    with pytest.raises(ValueError, match=r"\['ch'\]"):
        vqgan.chameleon_config(ch=64)


# ------------------------------------------------------------------ ids and fingerprint


def test_lm_ids_default_offset_and_tokenizer_file(tmp_path):
    default = vqgan.lm_id_mapping(8192)
    assert default(np.array([0, 8191], dtype=np.int16)).tolist() == [4, 8195] and "default" in default.source
    assert vqgan.image_code_of_token("IMGIMGBCZ", "IMGIMG") == 12
    assert vqgan.image_code_of_token("IMGIMGKZ", "IMGIMG") is None
    digits = lambda code: "".join("ABCDEFGHIJ"[int(d)] for d in str(code))  # noqa: E731
    ids = RNG.permutation(np.arange(100, 116))
    vocab = {"<s>": 0, "hello": 1, **{f"IMGIMG{digits(code)}Z": int(ids[code]) for code in range(16)}}
    (tmp_path / "tok.json").write_text(json.dumps({"model": {"vocab": vocab}}))
    mapping = vqgan.lm_id_mapping(16, tmp_path / "tok.json")
    assert mapping(np.arange(16)).tolist() == ids.tolist() and mapping.source.startswith("tokenizer-file")
    del vocab["IMGIMGBFZ"]
    (tmp_path / "tok.json").write_text(json.dumps({"model": {"vocab": vocab}}))
    with pytest.raises(ValueError, match="1 of 16 codes have no image token"):
        vqgan.lm_id_mapping(16, tmp_path / "tok.json")


def test_fingerprint_is_stable_and_tracks_weights_and_precision(tmp_path, tiny_dir):
    first, _ = vqgan.fingerprint(tiny_dir, "fp32")
    again, _ = vqgan.fingerprint(vqgan.write_tiny_model(tmp_path / "same", seed=0), "fp32")
    other, _ = vqgan.fingerprint(vqgan.write_tiny_model(tmp_path / "other", seed=1), "fp32")
    bf16, _ = vqgan.fingerprint(tiny_dir, "bf16")
    assert first["id"].startswith("untrained-") and first["trained"] is False
    assert first == again
    assert len({first["id"], other["id"], bf16["id"]}) == 3
