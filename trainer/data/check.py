"""Validate a training jsonl line by line, before any GPU time is spent on it.

`check_jsonl` reports every problem with its line (and column or byte offset), a short
excerpt and a hint, tells errors (the line cannot be trained on) from warnings (it can,
but probably not as intended: the role-format slips the tutorials warn about), and
summarises the data: formats, token lengths, truncation at ctx_len, duplicates and steps
per epoch. It never modifies the file.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from rwkv_tui.trainer.data.sft import ANSWER_ROLES, ROLES, role_spans
from rwkv_tui.trainer.errors import DataError

FORMATS = ("single-turn", "multi-turn", "system", "instruction", "text")
MAX_ISSUES_PER_KIND = 50  # beyond this, one summary line per kind keeps the report readable

_ROLE_GROUP = "|".join(ROLES)
_SINGLE_NEWLINE_ROLE = re.compile(rf"(?<!\n)\n({_ROLE_GROUP}):")
_NO_SPACE_AFTER_ROLE = re.compile(rf"(?:^|\n\n)({_ROLE_GROUP}):(?=[^ \n])")
_WRONG_CASE_ROLE = re.compile(r"(?:^|\n\n)(user|assistant|system|USER|ASSISTANT|SYSTEM|instruction|response):")


@dataclass
class DataIssue:
    severity: str  # "error" | "warning"
    line: int
    message: str
    hint: str = ""
    column: int | None = None
    excerpt: str = ""
    kind: str = ""

    def location(self) -> str:
        return f"line {self.line}" + (f", column {self.column}" if self.column else "")


@dataclass
class CheckReport:
    path: str
    lines: int = 0
    samples: int = 0
    formats: dict[str, int] = field(default_factory=dict)
    issues: list[DataIssue] = field(default_factory=list)
    suppressed: dict[str, int] = field(default_factory=dict)
    token_counts: list[int] = field(default_factory=list, repr=False)
    duplicates: int = 0
    ctx_len: int = 1024
    micro_bsz: int = 1
    cancelled: bool = False

    @property
    def errors(self) -> list[DataIssue]:
        return [i for i in self.issues if i.severity == "error"]

    @property
    def warnings(self) -> list[DataIssue]:
        return [i for i in self.issues if i.severity == "warning"]

    @property
    def ok(self) -> bool:
        return not self.errors and not self.suppressed.get("error") and self.samples > 0

    @property
    def total_tokens(self) -> int:
        return sum(self.token_counts) + len(self.token_counts)  # + one end-of-text per document

    @property
    def over_ctx_len(self) -> int:
        # A sample holds ctx_len + 1 tokens (inputs and the last target): a document and its
        # end-of-text token fit when n + 1 <= ctx_len + 1.
        return sum(1 for n in self.token_counts if n > self.ctx_len)

    @property
    def steps_per_epoch(self) -> int:
        """Steps for one pass over the samples, one document per sample (loading=pad)."""
        return math.ceil(self.samples / self.micro_bsz) if self.samples else 0

    def token_stats(self) -> dict[str, int]:
        counts = sorted(self.token_counts)
        if not counts:
            return {}
        pick = lambda q: counts[min(len(counts) - 1, int(q * (len(counts) - 1) + 0.5))]  # noqa: E731
        return {"min": counts[0], "median": pick(0.5), "p95": pick(0.95), "max": counts[-1]}

    def to_dict(self) -> dict:
        return {
            "path": self.path, "ok": self.ok, "lines": self.lines, "samples": self.samples,
            "formats": self.formats, "errors": len(self.errors) + self.suppressed.get("error", 0),
            "warnings": len(self.warnings) + self.suppressed.get("warning", 0),
            "issues": [asdict(i) for i in self.issues], "token_stats": self.token_stats(),
            "total_tokens": self.total_tokens, "over_ctx_len": self.over_ctx_len, "ctx_len": self.ctx_len,
            "duplicates": self.duplicates, "micro_bsz": self.micro_bsz, "steps_per_epoch": self.steps_per_epoch,
            "cancelled": self.cancelled,
        }


def classify(text: str) -> str:
    roles = [role for role, _, _ in role_spans(text)]
    if not roles:
        return "text"
    if "Instruction" in roles or "Response" in roles:
        return "instruction"
    if "System" in roles:
        return "system"
    return "multi-turn" if roles.count("User") > 1 else "single-turn"


def role_warnings(text: str) -> list[tuple[str, str, str]]:
    """(kind, message, hint) for the role-format slips the tutorials warn about."""
    found = []
    m = _SINGLE_NEWLINE_ROLE.search(text)
    if m:
        found.append(("single-newline", f"'{m.group(1)}:' follows a single \\n",
                      "separate roles with a blank line: \\n\\n (a single \\n is for line breaks inside a turn)"))
    m = _NO_SPACE_AFTER_ROLE.search(text)
    if m:
        found.append(("no-space", f"no space after '{m.group(1)}:'",
                      f"write '{m.group(1)}: text' with one space after the colon"))
    m = _WRONG_CASE_ROLE.search(text)
    if m:
        found.append(("role-case", f"role '{m.group(1)}:' is not capitalised like the tutorials' roles",
                      "use User:, Assistant:, System:, Instruction:, Input:, Response:"))
    spans = role_spans(text)
    if spans:
        last_role, start, end = spans[-1]
        if last_role not in ANSWER_ROLES:
            found.append(("no-answer", f"the sample ends with a {last_role} turn, not an answer",
                          "end every sample with Assistant: … (or Response: …) so there is something to learn"))
        elif not text[start:end].strip():
            found.append(("empty-answer", f"the final {last_role} turn is empty", "write the answer after the colon"))
    return found


def _json_hint(message: str) -> str:
    if "Unterminated string" in message:
        return 'a closing quote is missing: every string must end with "'
    if "Invalid control character" in message:
        return "a raw line break or tab is inside the string: write \\n or \\t instead"
    if "Expecting ',' delimiter" in message or "Expecting ':' delimiter" in message:
        return 'a quote inside the text ends the string early: write \\" for a quote inside text'
    if "Invalid \\escape" in message:
        return "a backslash starts an unknown escape: write \\\\ for a backslash"
    if "Expecting value" in message:
        return 'each line must be one JSON object such as {"text": "..."}'
    return "each line must be one JSON object such as {\"text\": \"...\"}"


def _excerpt(text: str, pos: int, width: int = 60) -> str:
    lo = max(0, pos - width // 2)
    snippet = text[lo: lo + width].replace("\n", "\\n").replace("\r", "\\r")
    return ("…" if lo else "") + snippet + ("…" if lo + width < len(text) else "")


class _Collector:
    def __init__(self, report: CheckReport) -> None:
        self.report = report
        self.per_kind: Counter[str] = Counter()

    def add(self, severity: str, kind: str, line: int, message: str, hint: str = "", column=None, excerpt="") -> None:
        self.per_kind[kind] += 1
        if self.per_kind[kind] > MAX_ISSUES_PER_KIND:
            self.report.suppressed[severity] = self.report.suppressed.get(severity, 0) + 1
            return
        self.report.issues.append(DataIssue(severity, line, message, hint, column, excerpt, kind))


def check_jsonl(
    path: str | Path,
    ctx_len: int = 1024,
    micro_bsz: int = 1,
    progress: Callable[[int, int], None] | None = None,
    cancel: Callable[[], bool] | None = None,
) -> CheckReport:
    """Check every line. `progress(bytes_done, bytes_total)` is called as it goes; when
    `cancel()` turns true the check stops and the report says `cancelled`."""
    from rwkv_tui.trainer.world_tokenizer import get_tokenizer

    path = Path(path)
    if not path.is_file():
        raise DataError("data file not found" if not path.exists() else "not a file", path=path,
                        hint="give a .jsonl file with one {\"text\": …} object per line")
    report = CheckReport(str(path), ctx_len=ctx_len, micro_bsz=max(1, micro_bsz))
    issues = _Collector(report)
    tokenizer = get_tokenizer()
    total = path.stat().st_size
    seen: dict[bytes, int] = {}
    batch: list[str] = []
    done = 0

    def flush() -> None:
        report.token_counts.extend(len(ids) for ids in tokenizer.encode_batch(batch))
        batch.clear()

    with path.open("rb") as handle:
        for line_no, raw in enumerate(handle, start=1):
            done += len(raw)
            report.lines = line_no
            if line_no == 1 and raw.startswith(b"\xef\xbb\xbf"):
                issues.add("warning", "bom", 1, "the file starts with a UTF-8 byte-order mark (BOM)",
                           "save the file as UTF-8 without BOM; rwkv-tui skips it, other tools may not")
                raw = raw[3:]
            if raw.endswith(b"\r\n"):
                issues.add("warning", "crlf", line_no, "Windows line ending (\\r\\n)",
                           "save with Unix line endings (\\n); the \\r is ignored")
            body = raw.rstrip(b"\r\n")
            if not body.strip():
                continue
            try:
                line = body.decode("utf-8")
            except UnicodeDecodeError as exc:
                issues.add("error", "utf8", line_no, f"invalid UTF-8 at byte {exc.start} of the line",
                           "re-save the file as UTF-8 (it may be GBK/Latin-1)", excerpt=repr(body[max(0, exc.start - 20): exc.start + 20]))
                continue
            text = _parse_text(line, line_no, issues)
            if text is None:
                continue
            report.samples += 1
            fmt = classify(text)
            report.formats[fmt] = report.formats.get(fmt, 0) + 1
            for kind, message, hint in role_warnings(text):
                issues.add("warning", kind, line_no, message, hint, excerpt=_excerpt(text, 0))
            digest = hashlib.blake2b(text.encode("utf-8"), digest_size=16).digest()
            if digest in seen:
                report.duplicates += 1
                issues.add("warning", "duplicate", line_no, f"same text as line {seen[digest]}",
                           "duplicates weigh a sample twice; use --repeat in prepare to repeat data on purpose")
            else:
                seen[digest] = line_no
            batch.append(text)
            if len(batch) >= 512:
                flush()
                if progress:
                    progress(done, total)
                if cancel and cancel():
                    report.cancelled = True
                    break
    flush()
    if progress:
        progress(done, total)
    chat = {"single-turn", "multi-turn", "system"}
    families = {("chat" if f in chat else f) for f in report.formats}
    if len(families) > 1:
        issues.add("warning", "mixed", 0, "the file mixes formats: " + ", ".join(
            f"{n} {f}" for f, n in sorted(report.formats.items())),
            "mixing is fine if intended; a stray format usually means a conversion bug")
    if report.samples == 0 and not report.errors:
        issues.add("error", "empty", 0, "the file has no samples", "add lines like {\"text\": \"User: …\\n\\nAssistant: …\"}")
    return report


def _parse_text(line: str, line_no: int, issues: _Collector) -> str | None:
    stripped = line.lstrip()
    offset = len(line) - len(stripped)
    try:
        obj, end = json.JSONDecoder().raw_decode(stripped)
    except json.JSONDecodeError as exc:
        issues.add("error", "json", line_no, f"invalid JSON: {exc.msg}", _json_hint(exc.msg),
                   column=exc.pos + offset + 1, excerpt=_excerpt(line, exc.pos + offset))
        return None
    rest = stripped[end:].strip()
    if rest:
        issues.add("error", "trailing", line_no, "extra characters after the JSON object",
                   "keep exactly one JSON object per line", column=offset + end + 1,
                   excerpt=_excerpt(line, offset + end))
        return None
    if not isinstance(obj, dict):
        issues.add("error", "not-object", line_no, f"the line is a JSON {type(obj).__name__}, not an object",
                   'write {"text": "..."}', excerpt=_excerpt(line, 0))
        return None
    if "text" not in obj:
        keys = ", ".join(list(obj)[:4])
        issues.add("error", "no-text", line_no, f'no "text" field (fields: {keys or "none"})',
                   'rename the field to "text", or join your fields into one "text" string',
                   excerpt=_excerpt(line, 0))
        return None
    text = obj["text"]
    if not isinstance(text, str):
        issues.add("error", "text-type", line_no, f'"text" is a {type(text).__name__}, not a string',
                   'make "text" one string; join conversation turns with \\n\\n', excerpt=_excerpt(line, 0))
        return None
    if not text.strip():
        issues.add("error", "empty-text", line_no, '"text" is empty', "remove the line or fill it in")
        return None
    if any(0xD800 <= ord(ch) <= 0xDFFF for ch in text):
        issues.add("error", "surrogate", line_no, "the text contains a lone surrogate escape (\\ud8xx)",
                   "fix the escaping where the file was produced")
        return None
    return text
