"""The optional CheXbert report labeler: a CheXbert-architecture model read from a local checkpoint folder.

BERT plus 13 four-class heads and one two-class head on the [CLS] token, as CheXbert trains it; each head's
class becomes a CheXpert value (:data:`CHEXBERT_CLASS_VALUE`). torch, transformers and tokenizers are the
optional extra ``cxr-instruct[chexbert]`` and are imported only when a model is loaded; the weights are
never downloaded (``docs/language.md`` §4.1). :func:`transforms.labeler.label_report` with
``backend="chexbert"`` is the way in; this module knows nothing of the rule-based labeler.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any

CHEXBERT_ORDER: tuple[str, ...] = (
    "Enlarged Cardiomediastinum",
    "Cardiomegaly",
    "Lung Opacity",
    "Lung Lesion",
    "Edema",
    "Consolidation",
    "Pneumonia",
    "Atelectasis",
    "Pneumothorax",
    "Pleural Effusion",
    "Pleural Other",
    "Fracture",
    "Support Devices",
    "No Finding",
)
"""Head order of CheXbert: 13 heads with classes (blank, positive, negative, uncertain), then No Finding
with (blank, positive)."""
CHEXBERT_CLASS_VALUE: tuple[float | None, ...] = (None, 1.0, 0.0, -1.0)
CHEXBERT_MAX_TOKENS = 512
CHEXBERT_FILES = ("config.json", "vocab.txt", "chexbert.pth")
_CHEXBERT_EXTRA = "pip install 'cxr-instruct[chexbert]'"


def _chexbert_modules() -> tuple[Any, Any, Any]:
    """(torch, transformers, tokenizers), or an ImportError that says how to get them."""
    try:
        import tokenizers
        import torch
        import transformers
    except ImportError as error:
        raise ImportError(
            f"the chexbert backend needs torch, transformers and tokenizers ({_CHEXBERT_EXTRA}); "
            f"missing: {error.name}. The default backend='rules' needs none of them."
        ) from error
    return torch, transformers, tokenizers


class CheXbertLabeler:
    """A CheXbert-architecture labeler loaded from a local directory, never from a hub.

    The directory holds ``config.json`` (a BertConfig, e.g. bert-base-uncased's), ``vocab.txt`` (its
    WordPiece vocabulary) and ``chexbert.pth`` (a torch file with the state dict, either bare or under
    ``model_state_dict`` as CheXbert and f1chexbert save it; ``module.`` prefixes are removed). The
    model is ``bert`` + 13 ``Linear(hidden, 4)`` + 1 ``Linear(hidden, 2)`` heads in ``linear_heads``,
    applied to the [CLS] vector, in :data:`CHEXBERT_ORDER`. f1chexbert 0.0.2 itself is not used: it
    fetches its tokenizer from the Hugging Face Hub and calls ``encode_plus``, which transformers 5
    removed (docs/language.md §4.1); this class reads the same checkpoint layout offline.
    """

    def __init__(self, checkpoint: str | Path):
        torch, transformers, tokenizers = _chexbert_modules()
        directory = Path(checkpoint)
        missing = [name for name in CHEXBERT_FILES if not (directory / name).is_file()]
        if missing:
            raise FileNotFoundError(
                f"CheXbert checkpoint directory {directory} lacks {missing}: it needs {list(CHEXBERT_FILES)} "
                "(the CheXbert weights are research-only and are never downloaded by this project)"
            )
        self._torch = torch
        config = transformers.BertConfig.from_json_file(str(directory / "config.json"))
        self.tokenizer = tokenizers.BertWordPieceTokenizer(str(directory / "vocab.txt"), lowercase=True)
        self.tokenizer.enable_truncation(min(CHEXBERT_MAX_TOKENS, config.max_position_embeddings))
        self.model = _build_chexbert_model(torch, transformers, config)
        state = torch.load(directory / "chexbert.pth", map_location="cpu", weights_only=True)
        state = state.get("model_state_dict", state)
        state = {key.removeprefix("module."): value for key, value in state.items()}
        problems = self.model.load_state_dict(state, strict=False)
        wrong = [k for k in problems.missing_keys if "position_ids" not in k]
        if wrong or problems.unexpected_keys:
            raise ValueError(
                f"{directory / 'chexbert.pth'} does not fit the CheXbert architecture: "
                f"missing {wrong[:5]}, unexpected {problems.unexpected_keys[:5]}"
            )
        self.model.eval()

    def __call__(self, text: str) -> dict[str, float | None]:
        """The 14 observations of one report (CheXpert values), in :data:`CHEXBERT_ORDER`."""
        if not isinstance(text, str):
            raise TypeError(f"report text must be str, got {type(text).__name__}")
        encoding = self.tokenizer.encode(" ".join(text.split()))
        ids = self._torch.tensor([encoding.ids])
        with self._torch.no_grad():
            logits = self.model(ids, self._torch.ones_like(ids))
        classes = [int(head.argmax(dim=1)[0]) for head in logits]
        return {name: CHEXBERT_CLASS_VALUE[cls] for name, cls in zip(CHEXBERT_ORDER, classes, strict=True)}


def _build_chexbert_model(torch: Any, transformers: Any, config: Any) -> Any:
    """CheXbert's ``bert_labeler``: BERT, dropout, 13 four-class heads and a two-class No Finding head."""

    class BertLabeler(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.bert = transformers.BertModel(config, add_pooling_layer=False)
            self.dropout = torch.nn.Dropout(0.1)
            heads = [torch.nn.Linear(config.hidden_size, 4) for _ in range(len(CHEXBERT_ORDER) - 1)]
            self.linear_heads = torch.nn.ModuleList([*heads, torch.nn.Linear(config.hidden_size, 2)])

        def forward(self, input_ids: Any, attention_mask: Any) -> list[Any]:
            cls = self.dropout(self.bert(input_ids, attention_mask=attention_mask)[0][:, 0, :])
            return [head(cls) for head in self.linear_heads]

    return BertLabeler()


@lru_cache(maxsize=4)
def chexbert_labeler(checkpoint: str) -> CheXbertLabeler:
    """One loaded model per checkpoint directory (cached)."""
    return CheXbertLabeler(checkpoint)
