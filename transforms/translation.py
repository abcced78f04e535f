"""Optional machine translation of PadChest's Spanish reports with a local MarianMT model.

The model is a ``transformers`` MarianMT folder (``save_pretrained`` layout: ``config.json`` with
``model_type: marian``, the weights, and the MarianTokenizer files ``source.spm``, ``target.spm``,
``vocab.json``), always loaded with ``local_files_only=True``: nothing is fetched from a hub. torch,
transformers and sentencepiece (``pip install -e '.[translation]'``) are imported only when a model is
loaded, so the default build needs none of them.

Choices (docs/language.md, "Translation"):

- **Sentence by sentence.** PadChest's ``Report`` is stemmed, lower-case Spanish whose sentences are
  separated by ``.`` tokens (`` . ``; runs like ``. .`` and a leading ``.`` occur, and ``.`` is its only
  punctuation). Marian models are trained on sentence pairs, so each sentence is translated alone,
  written as a sentence (first letter upper case, a final full stop), and the English sentences are
  joined with one space.
- **Each distinct sentence once per call.** A report repeats on every image of its study and sentences
  repeat across reports (the PadChest CSV: 345,484 sentences over its 160,861 images, 75,302 distinct),
  so a call translates each distinct sentence of its texts once. Nothing is cached between calls, so
  what a call returns depends on its texts alone, not on what the worker translated before.
- **Deterministic.** Greedy decoding (or beam search with ``num_beams``), never sampling, float32.
  Padding inside a batch can change the last bits of the float results, so in a near tie a sentence
  might translate differently in another batch: the batches of a call are fixed by its texts (sorted
  distinct sentences), so a rerun of a shard gives the same bytes; ``batch_size: 1`` makes a sentence
  translate the same in every shard too, at a cost in speed.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import threading
import warnings
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from schemas.config import TranslationConfig

PACKAGES = ("torch", "transformers", "sentencepiece")
INSTALL = "pip install -e '.[translation]'"

TOKENIZER_FILES = ("source.spm", "target.spm", "vocab.json")
"""What ``MarianTokenizer`` needs; ``OPTIONAL_FILES`` are read (and fingerprinted) when present."""
OPTIONAL_FILES = ("target_vocab.json", "tokenizer_config.json", "special_tokens_map.json", "generation_config.json")
WEIGHT_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)
"""In the order ``from_pretrained`` prefers them; an ``.index.json`` names its shards in ``weight_map``."""
_LAYOUT = (
    "a MarianMT folder (save_pretrained) holds config.json, model.safetensors or pytorch_model.bin, "
    "source.spm, target.spm and vocab.json"
)


def missing_packages() -> list[str]:
    """The packages of the ``translation`` extra that are not installed (nothing is imported)."""
    return [name for name in PACKAGES if importlib.util.find_spec(name) is None]


def model_files(folder: str | Path) -> list[str]:
    """The files of a local MarianMT folder that decide its translations, relative and sorted.

    Raises ValueError, one line naming the folder and what is wrong with it: not local, missing, no
    ``config.json`` or one whose ``model_type`` is not ``marian``, no tokenizer files, no weights."""
    where = f"translation model {folder}"
    if "://" in str(folder):
        raise ValueError(
            f"{where}: not a local folder; translation.model names a local MarianMT folder (models are never fetched)"
        )
    path = Path(folder)
    if not path.exists():
        raise ValueError(f"{where}: no such folder; set translation.model to a local MarianMT folder")
    if not path.is_dir():
        raise ValueError(f"{where}: is a file, not a folder; {_LAYOUT}")
    config = path / "config.json"
    if not config.is_file():
        raise ValueError(f"{where}: lacks config.json; {_LAYOUT}")
    try:
        model_type = json.loads(config.read_text()).get("model_type")
    except (OSError, ValueError, AttributeError) as error:
        raise ValueError(f"{where}: config.json is not a readable JSON object ({error}); {_LAYOUT}") from None
    if model_type != "marian":
        raise ValueError(
            f"{where}: config.json has model_type {model_type!r}, not 'marian'; only MarianMT models are supported"
        )
    missing = [name for name in TOKENIZER_FILES if not (path / name).is_file()]
    if missing:
        raise ValueError(f"{where}: lacks {', '.join(missing)} (the MarianTokenizer files); {_LAYOUT}")
    weights = next((name for name in WEIGHT_FILES if (path / name).is_file()), None)
    if weights is None:
        raise ValueError(f"{where}: lacks the weights ({' or '.join(WEIGHT_FILES)}); {_LAYOUT}")
    files = ["config.json", weights, *TOKENIZER_FILES, *(name for name in OPTIONAL_FILES if (path / name).is_file())]
    if weights.endswith(".index.json"):
        try:
            shards = sorted(set(json.loads((path / weights).read_text())["weight_map"].values()))
        except (OSError, ValueError, KeyError, AttributeError) as error:
            raise ValueError(f"{where}: {weights} has no readable weight_map ({error})") from None
        lost = [name for name in shards if not (path / name).is_file()]
        if lost:
            raise ValueError(
                f"{where}: lacks {', '.join(lost[:3])}{' ...' if len(lost) > 3 else ''}, named in {weights}"
            )
        files += shards
    return sorted(files)


def sentences(report: str) -> list[str]:
    """A PadChest report as the sentences given to the model: split at its ``.`` tokens, empty ones
    dropped, each with its first letter in upper case and a final full stop.

    ``" sin hallazg signific . . cifosis dorsal ."`` -> ``["Sin hallazg signific.", "Cifosis dorsal."]``"""
    found, words = [], []
    for token in [*report.split(), "."]:
        if token != ".":
            words.append(token)
        elif words:
            found.append(" ".join(words))
            words = []
    return [sentence[0].upper() + sentence[1:] + "." for sentence in found]


class Translator:
    """A local MarianMT model and its decoding options. The folder is checked at construction
    (:func:`model_files`); the model is loaded on the first :meth:`translate`."""

    def __init__(
        self,
        model: str | Path,
        *,
        batch_size: int = 16,
        num_beams: int = 1,
        max_new_tokens: int = 256,
        device: str = "cpu",
    ):
        self.folder = Path(model)
        self.files = model_files(self.folder)
        positions = json.loads((self.folder / "config.json").read_text()).get("max_position_embeddings")
        if positions is not None and max_new_tokens > positions:
            raise ValueError(
                f"translation max_new_tokens {max_new_tokens} is more than the "
                f"{positions} positions of {self.folder / 'config.json'}; lower it"
            )
        self.batch_size, self.num_beams, self.max_new_tokens, self.device = (
            batch_size,
            num_beams,
            max_new_tokens,
            device,
        )
        self.method = f"translation:{self.folder.name}"
        self._loaded: tuple[Any, Any, Any] | None = None
        self._fingerprint: dict | None = None
        self._lock = threading.Lock()

    def translate(self, texts: list[str]) -> list[str]:
        """The English of each report, in order; ``""`` for a report with no sentence. The distinct
        sentences of the call are translated once each, ``batch_size`` at a time, shortest first. Nothing
        is remembered between calls: the batches, and so the output to the last bit, depend only on
        ``texts`` (the image stage calls once per shard, so a shard translates the same on any worker)."""
        for text in texts:
            if not isinstance(text, str):
                raise TypeError(f"a report to translate must be str, got {type(text).__name__}")
        split = [sentences(text) for text in texts]
        distinct = sorted({sentence for found in split for sentence in found}, key=lambda s: (len(s), s))
        english: dict[str, str] = {}
        with self._lock:
            for start in range(0, len(distinct), self.batch_size):
                batch = distinct[start : start + self.batch_size]
                english.update(zip(batch, self._generate(batch)))
        return [" ".join(text for sentence in found if (text := english[sentence])) for found in split]

    def fingerprint(self) -> dict:
        """What decides the translations, for the build manifest: the method, the folder's name, a sha256
        over its files (names, sizes and bytes of :attr:`files`) and the decoding options."""
        if self._fingerprint is None:
            digest = hashlib.sha256()
            for name in self.files:
                path = self.folder / name
                digest.update(f"{name}|{path.stat().st_size}|".encode())
                with path.open("rb") as stream:
                    while chunk := stream.read(1 << 20):
                        digest.update(chunk)
            self._fingerprint = {
                "method": self.method,
                "model": self.folder.name,
                "sha256": digest.hexdigest(),
                "files": self.files,
                "unit": "sentence",
                "num_beams": self.num_beams,
                "max_new_tokens": self.max_new_tokens,
                "batch_size": self.batch_size,
                "device": self.device,
            }
        return self._fingerprint

    def _generate(self, batch: list[str]) -> list[str]:
        """One model call: the English of each sentence of ``batch``."""
        torch, model, tokenizer = self._load()
        inputs = tokenizer(batch, return_tensors="pt", padding=True, truncation=True).to(self.device)
        with torch.no_grad():
            output = model.generate(
                **inputs, do_sample=False, num_beams=self.num_beams, max_new_tokens=self.max_new_tokens
            )
        return [text.strip() for text in tokenizer.batch_decode(output, skip_special_tokens=True)]

    def _load(self) -> tuple[Any, Any, Any]:
        if self._loaded is None:
            missing = missing_packages()
            if missing:
                raise ImportError(
                    f"translation needs {', '.join(PACKAGES)} ({INSTALL}); missing: "
                    f"{', '.join(missing)}. Without a translation: key the build needs none of them"
                )
            import torch
            import transformers

            if self.device == "cuda" and not torch.cuda.is_available():
                raise ValueError("translation device is 'cuda' but torch finds no CUDA device; use device: cpu")
            with warnings.catch_warnings():
                # Moses punctuation normalisation: PadChest's only punctuation is the full stop
                warnings.filterwarnings("ignore", message="Recommended: pip install sacremoses")
                tokenizer = transformers.MarianTokenizer.from_pretrained(str(self.folder), local_files_only=True)
            model = transformers.MarianMTModel.from_pretrained(
                str(self.folder), local_files_only=True, dtype=torch.float32
            )
            self._loaded = (torch, model.to(self.device).eval(), tokenizer)  # type: ignore[arg-type]  # transformers' to() stub
        return self._loaded


def translator(options: TranslationConfig) -> Translator:
    """The Translator of a config's ``translation`` key, one per process and options (a Beam worker
    loads its model once)."""
    return _translator(options.model, options.batch_size, options.num_beams, options.max_new_tokens, options.device)


@lru_cache(maxsize=4)
def _translator(model: str, batch_size: int, num_beams: int, max_new_tokens: int, device: str) -> Translator:
    return Translator(model, batch_size=batch_size, num_beams=num_beams, max_new_tokens=max_new_tokens, device=device)
