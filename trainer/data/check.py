"""Validate a training jsonl line by line, before any GPU time is spent on it.

`check_jsonl` reports every problem with its line (and column or byte offset), a short
excerpt and a hint, tells errors (the line cannot be trained on) from warnings (it can,
but probably not as intended: the role-format slips the tutorials warn about), and
summarises the data: formats, token lengths, truncation at ctx_len, duplicates and steps
per epoch. It never modifies the file.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from rwkv_tui.trainer.data.records import LineProblem, excerpt, read_samples
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

    def add_problem(self, severity: str, line: int, problem: LineProblem) -> None:
        self.add(severity, problem.kind, line, problem.message, problem.hint, problem.column, problem.excerpt)


def _note_sample(line: int, text: str, issues: _Collector, seen: dict[bytes, int]) -> None:
    """Count a usable sample's format; warn about role slips and a text seen before."""
    report = issues.report
    report.samples += 1
    fmt = classify(text)
    report.formats[fmt] = report.formats.get(fmt, 0) + 1
    for kind, message, hint in role_warnings(text):
        issues.add("warning", kind, line, message, hint, excerpt=excerpt(text, 0))
    digest = hashlib.blake2b(text.encode("utf-8"), digest_size=16).digest()
    if digest in seen:
        report.duplicates += 1
        issues.add("warning", "duplicate", line, f"same text as line {seen[digest]}",
                   "duplicates weigh a sample twice; use --repeat in prepare to repeat data on purpose")
    else:
        seen[digest] = line


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
    seen: dict[bytes, int] = {}  # text digest -> the first line that had it
    batch: list[str] = []
    done = 0

    def flush() -> None:
        report.token_counts.extend(len(ids) for ids in tokenizer.encode_batch(batch))
        batch.clear()

    for sample in read_samples(path):
        done = sample.end
        report.lines = sample.line
        for warning in sample.warnings:
            issues.add_problem("warning", sample.line, warning)
        if sample.error is not None:
            issues.add_problem("error", sample.line, sample.error)
            continue
        if sample.text is None:  # a blank line
            continue
        _note_sample(sample.line, sample.text, issues, seen)
        batch.append(sample.text)
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

