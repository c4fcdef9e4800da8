"""How well a model predicts documents: the scoring core of `rwkv-tui eval` and of the validation
loss during training, so that a run's val at step 0 equals `eval` on the same documents.

The metric is the token-weighted mean next-token cross-entropy in nats over every document.
A document is tokenized as training tokenizes it (`encode(text) + [0]`, the World tokenizer,
`data.tokenize`); its first token is not predicted, so a document of n tokens gives n - 1
predictions. With the `sft` mask only the targets training learns are scored (the answers,
`data.sft`), otherwise every one. A document longer than `ctx_len` is scored in windows of
ctx_len inputs that carry the RNN state from one window to the next, so the result does not
depend on ctx_len beyond rounding; the model starts each document from its initial state (zeros,
or a mounted tuned state).

Documents are scored in batches of similar length (sorted, then padded at the end: an RNN's
outputs at a position never see the padding after it), which is exact and much faster than one
at a time. Sums are kept per document in float64, so the order of batches changes nothing.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from rwkv_tui.trainer.errors import DataError

MASKS = ("none", "sft")
# Tokens (batch rows x window length) of one forward call: logits take 4 x 65536 bytes a token in
# fp32, so 4096 tokens keep them at 1 GiB; a window alone may exceed it (one document of ctx_len).
BATCH_TOKENS = 4096


@dataclass(frozen=True)
class Document:
    """One document as the model reads it: its token ids (ending with 0) and which of them are
    scored as targets (`trained[0]` is never used: the first token is not predicted)."""
    tokens: np.ndarray   # int64 [n]
    trained: np.ndarray  # bool [n]
    format: str | None = None  # the record format it came from ("text", "OpenAI messages", …)

    @property
    def targets(self) -> int:
        """How many of its tokens are scored."""
        return int(self.trained[1:].sum())


@dataclass
class Score:
    """Summed cross-entropy over `tokens` scored targets of `documents` documents."""
    loss_sum: float = 0.0
    tokens: int = 0
    documents: int = 0

    @property
    def loss(self) -> float:
        return self.loss_sum / self.tokens if self.tokens else float("nan")

    @property
    def ppl(self) -> float:
        loss = self.loss
        return math.exp(loss) if loss < 700 else float("inf")  # exp overflows past ~709

    def add(self, other: Score) -> None:
        self.loss_sum += other.loss_sum
        self.tokens += other.tokens
        self.documents += other.documents

    def as_dict(self) -> dict:
        return {"loss": self.loss, "ppl": self.ppl, "tokens": self.tokens, "documents": self.documents}


@dataclass
class Evaluation:
    """The total and the per-format scores (documents without a known format count in the total only)."""
    total: Score = field(default_factory=Score)
    formats: dict[str, Score] = field(default_factory=dict)

    def as_dict(self) -> dict:
        """{"loss", "ppl", "tokens", "documents", "formats": {name: {the same four}}}: `eval --json`."""
        return {**self.total.as_dict(), "formats": {name: s.as_dict() for name, s in self.formats.items()}}


# ---------------------------------------------------------------------------------------------
# Documents


def check_mask(mask: str) -> None:
    if mask not in MASKS:
        raise DataError(f"unknown mask {mask!r}", hint=f"choose one of: {', '.join(MASKS)}")


def documents_from_texts(texts: Sequence[str], mask: str = "none",
                         formats: Sequence[str | None] | None = None) -> list[Document]:
    """`texts` tokenized by the training pipeline, with the `mask` training uses ("sft": answers only)."""
    from rwkv_tui.trainer.data.tokenize import tokenize_documents

    check_mask(mask)
    if not texts:
        return []
    tokenized = tokenize_documents(list(texts), with_masks=mask == "sft")
    ends = np.cumsum(tokenized.sizes)
    documents = []
    for i, end in enumerate(ends):
        start = int(end - tokenized.sizes[i])
        tokens = tokenized.tokens[start:end].astype(np.int64)
        trained = (tokenized.masks[start:end].astype(bool) if tokenized.masks is not None
                   else np.ones(len(tokens), dtype=bool))
        documents.append(Document(tokens, trained, formats[i] if formats is not None else None))
    return documents


def read_documents(path: str | Path, mask: str = "none") -> list[Document]:
    """Every record of a file the data reader accepts, with its format; the first bad record raises
    (as in training), naming its line and what to fix."""
    from rwkv_tui.trainer.data.records import bad_line_error, read_samples

    check_mask(mask)
    if not Path(path).exists():
        raise DataError("data file not found", path=path, hint="give a record file such as data.jsonl")
    texts, formats = [], []
    for sample in read_samples(path):
        if sample.error is not None:
            raise bad_line_error(path, sample.line, sample.error, sample.unit)
        if sample.text is not None:
            texts.append(sample.text)
            formats.append(sample.format)
    if not texts:
        raise DataError("no documents to score", path=path, hint="the file has no records with text")
    return documents_from_texts(texts, mask, formats)


# ---------------------------------------------------------------------------------------------
# Scoring


def plan_batches(documents: Sequence[Document], ctx_len: int, batch_tokens: int = BATCH_TOKENS) -> list[list[int]]:
    """Indices of `documents` in batches of similar length, longest first: each batch holds as many
    rows as fit `batch_tokens` with its first (longest) window."""
    order = sorted(range(len(documents)), key=lambda i: (-len(documents[i].tokens), i))
    batches: list[list[int]] = []
    while order:
        window = max(1, min(ctx_len, len(documents[order[0]].tokens) - 1))
        rows = max(1, batch_tokens // window)
        batches.append(order[:rows])
        order = order[rows:]
    return batches


def score_batch(model, documents: Sequence[Document], ctx_len: int, device) -> torch.Tensor:
    """Summed cross-entropy of each document (float64 [B], on the host): windows of `ctx_len`
    inputs, the state carried; the padding after a shorter document is never scored."""
    longest = max(len(d.tokens) for d in documents)
    tokens = np.zeros((len(documents), longest), dtype=np.int64)
    weights = np.zeros((len(documents), longest), dtype=np.float32)
    for row, document in enumerate(documents):
        tokens[row, :len(document.tokens)] = document.tokens
        weights[row, :len(document.tokens)] = document.trained
    tokens_t = torch.from_numpy(tokens).to(device)
    weights_t = torch.from_numpy(weights[:, 1:]).to(device)
    sums = torch.zeros(len(documents), dtype=torch.float64, device=device)
    state = None
    for start in range(0, longest - 1, ctx_len):
        end = min(start + ctx_len, longest - 1)
        logits, state = model(tokens_t[:, start:end], state)
        losses = F.cross_entropy(logits.float().flatten(0, 1), tokens_t[:, start + 1:end + 1].flatten(),
                                 reduction="none").view(len(documents), end - start)
        sums += (losses * weights_t[:, start:end]).sum(dim=1, dtype=torch.float64)
    return sums.cpu()


@torch.no_grad()
def score_documents(model, documents: Sequence[Document], ctx_len: int, *, device=None,
                    batch_tokens: int = BATCH_TOKENS) -> list[float]:
    """Each document's summed cross-entropy, in the order given. The caller puts the model in eval mode."""
    if ctx_len < 1:
        raise ValueError(f"ctx_len must be at least 1, got {ctx_len}")
    device = device if device is not None else _model_device(model)
    sums = [0.0] * len(documents)
    for batch in plan_batches(documents, ctx_len, batch_tokens):
        scored = [i for i in batch if len(documents[i].tokens) > 1]
        if not scored:
            continue
        for i, value in zip(scored, score_batch(model, [documents[i] for i in scored], ctx_len, device).tolist()):
            sums[i] = value
    return sums


def evaluate(model, documents: Sequence[Document], ctx_len: int, *, device=None,
             batch_tokens: int = BATCH_TOKENS) -> Evaluation:
    """The total and per-format scores of `documents` (see the module docstring for the metric)."""
    result = Evaluation()
    sums = score_documents(model, documents, ctx_len, device=device, batch_tokens=batch_tokens)
    for document, loss_sum in zip(documents, sums):
        one = Score(loss_sum, document.targets, 1)
        result.total.add(one)
        if document.format is not None:
            result.formats.setdefault(document.format, Score()).add(one)
    return result


def total_score(documents: Iterable[Document], sums: Iterable[float]) -> Score:
    score = Score()
    for document, loss_sum in zip(documents, sums):
        score.add(Score(loss_sum, document.targets, 1))
    return score


def _model_device(model) -> torch.device:
    return next(model.parameters()).device
