"""Tokenizer throughput at 512^2 on the full-size Chameleon VQ-GAN architecture (random weights).

Measured side by side in one run: a naive loop (batch 1, fp32, per-image numpy preprocessing, the HF
``encode``) and the pipeline's batched path (``transforms.vqgan.Tokenizer``) at several batch sizes
in fp32 and bf16. Prints images/s, the ratio to the naive loop, achieved GFLOP/s against a matmul
ceiling measured on the same device in the same run (554.3 GFLOP per image, manifests/tokenizer.yaml),
and the bf16-vs-fp32 code agreement. Batch sizes whose activations would not fit in memory are
reported as skipped.

    python benchmarks/bench_tokenize.py --device cpu --images 4 --batch-sizes 1,4,16
    python benchmarks/bench_tokenize.py --device cuda --images 256
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from transformers import ChameleonVQVAE

from transforms import vqgan

# Peak activation memory per 512^2 image in inference mode (docs/tokenizer.md §4: CPU RSS proxy).
BYTES_PER_IMAGE = {"fp32": 680 * 2**20, "bf16": 316 * 2**20}


def xray_like(n: int, seed: int) -> np.ndarray:
    """Smooth uint8 images (low-frequency field + mild noise): closer to radiographs than white noise."""
    rng = np.random.default_rng(seed)
    coarse = rng.normal(size=(n, 16, 16))
    smooth = np.kron(coarse, np.ones((32, 32)))
    smooth += rng.normal(scale=0.15, size=smooth.shape)
    scaled = (smooth - smooth.min()) / (smooth.max() - smooth.min()) * 255
    return scaled.astype(np.uint8)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def matmul_gflops(device: torch.device, dtype: torch.dtype, size: int = 2048, repeats: int = 5) -> float:
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    a @ b
    sync(device)
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    sync(device)
    return 2 * size**3 * repeats / (time.perf_counter() - start) / 1e9


def free_bytes(device: torch.device) -> int:
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    with open("/proc/meminfo") as handle:
        info = dict(line.split(":", 1) for line in handle)
    return int(info["MemAvailable"].split()[0]) * 1024


def naive_loop(model: ChameleonVQVAE, images: np.ndarray, device: torch.device) -> tuple[float, np.ndarray]:
    """What one writes first: one image at a time, fp32, no_grad, HF ``encode``."""
    codes = []
    sync(device)
    start = time.perf_counter()
    with torch.no_grad():
        for image in images:
            pixels = torch.from_numpy(vqgan.reference_pixels(image[None])).to(device)
            codes.append(model.encode(pixels).image_tokens.cpu().numpy())
    sync(device)
    return len(images) / (time.perf_counter() - start), np.stack(codes).astype(np.int16)


def batched(tokenizer: vqgan.Tokenizer, images: np.ndarray, batch_size: int) -> tuple[float, np.ndarray]:
    tokenizer.encode_codes(images[:1])  # warm-up (kernel selection, allocator)
    sync(tokenizer.device)
    start = time.perf_counter()
    codes = [tokenizer.encode_codes(images[i : i + batch_size]) for i in range(0, len(images), batch_size)]
    sync(tokenizer.device)
    return len(images) / (time.perf_counter() - start), np.concatenate(codes)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch-sizes", default="1,16,64,128")
    parser.add_argument(
        "--images",
        type=int,
        default=None,
        help="images per measurement (rounded up to the batch size); default 4 on CPU, 256 on CUDA",
    )
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    device = vqgan.require_device(args.device)
    flops = float(vqgan.settings()["flops_per_image"])
    n_images = args.images or (256 if device.type == "cuda" else 4)

    torch.manual_seed(args.seed)
    model = ChameleonVQVAE(vqgan.chameleon_config()).to(device).eval().requires_grad_(False)
    params = sum(p.numel() for p in model.parameters())
    ceiling = {"fp32": matmul_gflops(device, torch.float32), "bf16": matmul_gflops(device, torch.bfloat16)}
    print(
        f"device {device} ({torch.cuda.get_device_name(device) if device.type == 'cuda' else 'cpu'}, "
        f"{torch.get_num_threads()} threads), torch {torch.__version__}; full-size architecture, "
        f"{params / 1e6:.1f} M parameters, random weights; 512x512; {flops / 1e9:.1f} GFLOP/image"
    )
    print(
        f"measured matmul ceiling: fp32 {ceiling['fp32']:.0f} GFLOP/s, bf16 {ceiling['bf16']:.0f} GFLOP/s "
        f"-> at most {ceiling['fp32'] * 1e9 / flops:.3f} / {ceiling['bf16'] * 1e9 / flops:.3f} images/s"
    )

    baseline_images = xray_like(n_images, args.seed)
    naive_rate, naive_codes = naive_loop(model, baseline_images, device)
    print(f"\nnaive loop (batch 1, fp32, HF encode): {naive_rate:.3f} images/s over {n_images} images")
    print(
        f"{'batch':>5} {'precision':>9} {'images':>6} {'images/s':>9} {'x naive':>8} {'GFLOP/s':>8} "
        f"{'of ceiling':>10} {'bf16=fp32 codes':>15}"
    )
    tokenizers = {precision: vqgan.Tokenizer(model, device, precision) for precision in ("fp32", "bf16")}
    for batch_size in (int(b) for b in args.batch_sizes.split(",")):
        count = -(-n_images // batch_size) * batch_size
        images = xray_like(count, args.seed)
        codes = {}
        for precision, tokenizer in tokenizers.items():
            need = BYTES_PER_IMAGE[precision] * batch_size
            if need > 0.8 * free_bytes(device):
                print(
                    f"{batch_size:>5} {precision:>9}  skipped: needs ~{need / 2**30:.0f} GiB, "
                    f"{free_bytes(device) / 2**30:.0f} GiB free"
                )
                continue
            rate, codes[precision] = batched(tokenizer, images, batch_size)
            achieved = rate * flops / 1e9
            agreement = ""
            if precision == "bf16" and "fp32" in codes:
                agreement = f"{(codes['bf16'] == codes['fp32']).mean():.4f}"
            print(
                f"{batch_size:>5} {precision:>9} {count:>6} {rate:>9.3f} {rate / naive_rate:>8.2f} "
                f"{achieved:>8.1f} {achieved / ceiling[precision]:>10.2f} {agreement:>15}"
            )
            if precision == "fp32" and batch_size == 1:
                assert np.array_equal(codes["fp32"][:n_images], naive_codes.reshape(n_images, -1)), (
                    "batched fp32 path must give the naive loop's codes"
                )


if __name__ == "__main__":
    main()
