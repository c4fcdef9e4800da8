"""SFT loss masks: which tokens of a chat or instruction sample are trained.

Roles are separated by a blank line (`\\n\\n`) and start with `User:`, `Assistant:`,
`System:`, `Instruction:`, `Input:` or `Response:`. Only what the model should learn to
say is trained: the text after `Assistant:`/`Response:` up to and including the `\\n\\n`
that ends the turn, and the end-of-text token after a final reply (so the model learns
to stop). Plain text without roles is trained entirely. The mask is computed from the
tokens of the whole text (byte offsets), so ids are identical to unmasked tokenization.
"""

from __future__ import annotations

import re

import numpy as np

ANSWER_ROLES = ("Assistant", "Response")
ROLES = ("System", "User", "Assistant", "Instruction", "Input", "Response")
_TURN = re.compile(r"(?:^|\n\n)(" + "|".join(ROLES) + r"):")


def role_spans(text: str) -> list[tuple[str, int, int]]:
    """(role, content start, end incl. the blank line that closes the turn) as character offsets."""
    marks = [(m.group(1), m.end(), m.start()) for m in _TURN.finditer(text)]
    spans = []
    for i, (role, content_start, _) in enumerate(marks):
        end = marks[i + 1][2] + 2 if i + 1 < len(marks) else len(text)  # keep the "\n\n" in this turn
        spans.append((role, content_start, end))
    return spans


def trained_byte_ranges(text: str) -> list[tuple[int, int]] | None:
    """Byte ranges of the answer turns; None when the text has no roles (train everything)."""
    spans = role_spans(text)
    if not spans:
        return None
    answers = [(s, e) for role, s, e in spans if role in ANSWER_ROLES]
    byte_at = _byte_offsets(text, sorted({i for answer in answers for i in answer}))
    return [(byte_at[s], byte_at[e]) for s, e in answers]


def _byte_offsets(text: str, char_offsets: list[int]) -> dict[int, int]:
    """UTF-8 byte offset of each (ascending) character offset: only the pieces between
    them are encoded, not the text a character at a time."""
    byte_at, chars, nbytes = {}, 0, 0
    for offset in char_offsets:
        nbytes += len(text[chars:offset].encode("utf-8"))
        chars = offset
        byte_at[offset] = nbytes
    return byte_at


def token_mask(text: str, token_lengths: np.ndarray) -> np.ndarray:
    """Mask for `encode(text) + [0]`; `token_lengths` are the byte lengths of encode(text)."""
    n = len(token_lengths)
    mask = np.ones(n + 1, dtype=np.uint8)
    ranges = trained_byte_ranges(text)
    if ranges is None:
        return mask
    mask[:] = 0
    starts = np.cumsum(token_lengths) - token_lengths
    total = int(np.sum(token_lengths))
    for lo, hi in ranges:
        mask[:n][(starts >= lo) & (starts < hi)] = 1
        if hi >= total:  # the final reply: also learn to emit end-of-text
            mask[n] = 1
    return mask
