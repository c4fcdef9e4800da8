"""Validate a training records file record by record, before any GPU time is spent on it.

`check_jsonl` (any file `records` reads: jsonl, json, parquet, csv/tsv, arrow, a `datasets`
folder) reports every problem with its line or row (and column or byte offset), a short
excerpt and a hint, tells errors (the line cannot be trained on) from warnings (it can,
but probably not as intended: the role-format slips the tutorials warn about), and
summarises the data: formats, token lengths, truncation at ctx_len, duplicates and steps
per epoch, and the record format it detected ("OpenAI messages"). A file may mix record
formats only if every record converts: the mix is then a warning, else an error. It never
modifies the file.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from rwkv_tui.trainer.data.records import LineProblem, Sample, excerpt, format_summary, input_size, read_samples
from rwkv_tui.trainer.data.sft import ANSWER_ROLES, ROLES, role_spans
from rwkv_tui.trainer.data.split import held_out_mask, split_key, text_digest
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
    unit: str = "line"  # "line" (jsonl) or "row" (every other kind of file)

    def location(self) -> str:
        return f"{self.unit} {self.line}" + (f", column {self.column}" if self.column else "")


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
    record_formats: dict[str, int] = field(default_factory=dict)  # records per format, in order of first use
    first_of_format: dict[str, str] = field(default_factory=dict)  # format -> where it first appears ("line 3")
    # The validation split (data.val_fraction or data.val_path), as training would make it.
    val_fraction: float = 0.0
    val_path: str = ""
    val_documents: int = 0
    val_tokens: int = 0  # + one end-of-text per document, like total_tokens

    @property
    def detected(self) -> str:
        """The file's record format as `data check` prints it: "OpenAI messages", "mixed: …"."""
        return format_summary(list(self.record_formats))

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
    def train_documents(self) -> int:
        """The samples left to train on once val_fraction's documents are held out."""
        return self.samples - (self.val_documents if self.val_fraction > 0 else 0)

    @property
    def train_tokens(self) -> int:
        return self.total_tokens - (self.val_tokens if self.val_fraction > 0 else 0)

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
            "cancelled": self.cancelled, "detected": self.detected, "record_formats": self.record_formats,
            "val_fraction": self.val_fraction, "val_path": self.val_path,
            "train_documents": self.train_documents, "train_tokens": self.train_tokens,
            "val_documents": self.val_documents, "val_tokens": self.val_tokens,
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

    def add(self, severity: str, kind: str, line: int, message: str, hint: str = "", column=None, excerpt="",
            unit: str = "line") -> None:
        self.per_kind[kind] += 1
        if self.per_kind[kind] > MAX_ISSUES_PER_KIND:
            self.report.suppressed[severity] = self.report.suppressed.get(severity, 0) + 1
            return
        self.report.issues.append(DataIssue(severity, line, message, hint, column, excerpt, kind, unit))

    def add_problem(self, severity: str, line: int, problem: LineProblem, unit: str = "line") -> None:
        self.add(severity, problem.kind, line, problem.message, problem.hint, problem.column, problem.excerpt, unit)


def _note_record_format(sample: Sample, report: CheckReport) -> None:
    if sample.format is None:
        return
    report.record_formats[sample.format] = report.record_formats.get(sample.format, 0) + 1
    report.first_of_format.setdefault(sample.format, sample.where)


def _note_mixed_record_formats(report: CheckReport, issues: _Collector) -> None:
    """A file mixing record formats trains when every record converts (a warning: usually a
    merge of two sources); when some do not, the mix is reported as an error with them."""
    if len(report.record_formats) < 2:
        return
    every_record_converts = not report.errors and not report.suppressed.get("error")
    mix = ", ".join(f"{n} {fmt} (first at {report.first_of_format[fmt]})" for fmt, n in report.record_formats.items())
    issues.add("warning" if every_record_converts else "error", "mixed-records", 0,
               f"the file mixes record formats: {mix}",
               "fine when intended, as long as every record converts" if every_record_converts else
               "a mixed file must convert in full: fix or remove the records reported above")


def _note_sample(line: int, text: str, issues: _Collector, seen: dict[bytes, int], unit: str = "line",
                 already_warned: frozenset[str] = frozenset()) -> bytes:
    """Count a usable sample's format; warn about role slips (but not those its conversion
    `already_warned` of, naming the field) and a text seen before. The text's digest is
    returned (the validation split is keyed by it)."""
    report = issues.report
    report.samples += 1
    fmt = classify(text)
    report.formats[fmt] = report.formats.get(fmt, 0) + 1
    for kind, message, hint in role_warnings(text):
        if kind not in already_warned:
            issues.add("warning", kind, line, message, hint, excerpt=excerpt(text, 0), unit=unit)
    digest = text_digest(text)
    if digest in seen:
        report.duplicates += 1
        issues.add("warning", "duplicate", line, f"same text as {unit} {seen[digest]}",
                   "duplicates weigh a sample twice; use --repeat in prepare to repeat data on purpose", unit=unit)
    else:
        seen[digest] = line
    return digest


def check_jsonl(
    path: str | Path,
    ctx_len: int = 1024,
    micro_bsz: int = 1,
    progress: Callable[[int, int], None] | None = None,
    cancel: Callable[[], bool] | None = None,
    val_fraction: float = 0.0,
    val_path: str | Path | None = None,
    seed: int = 0,
) -> CheckReport:
    """Check every line. `progress(bytes_done, bytes_total)` is called as it goes; when
    `cancel()` turns true the check stops and the report says `cancelled`. With `val_fraction`
    (held out by `seed`, as training holds it out) or a `val_path`, the report gives the sizes
    of both sides of the validation split."""
    from rwkv_tui.trainer.world_tokenizer import get_tokenizer

    path = Path(path)
    if not path.exists():
        raise DataError("data file not found", path=path,
                        hint="give a .jsonl, .json, .parquet, .csv, .tsv or .arrow file, or a datasets folder")
    report = CheckReport(str(path), ctx_len=ctx_len, micro_bsz=max(1, micro_bsz), val_fraction=val_fraction,
                         val_path=str(val_path or ""))
    split_keys: list[int] = []  # one per sample, in token_counts' order, when val_fraction asks
    issues = _Collector(report)
    tokenizer = get_tokenizer()
    total = input_size(path)
    seen: dict[bytes, int] = {}  # text digest -> the first line (or row) that had it
    batch: list[str] = []
    done = 0

    def flush() -> None:
        report.token_counts.extend(len(ids) for ids in tokenizer.encode_batch(batch))
        batch.clear()

    for sample in read_samples(path):
        done = sample.end
        report.lines = sample.line
        _note_record_format(sample, report)
        for warning in sample.warnings:
            issues.add_problem("warning", sample.line, warning, sample.unit)
        if sample.error is not None:
            issues.add_problem("error", sample.line, sample.error, sample.unit)
            continue
        if sample.text is None:  # a blank line
            continue
        converted = frozenset(w.kind for w in sample.warnings) if sample.warnings else frozenset()
        digest = _note_sample(sample.line, sample.text, issues, seen, sample.unit, converted)
        if val_fraction > 0:
            split_keys.append(split_key(digest, seed))
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
    _note_mixed_record_formats(report, issues)
    chat = {"single-turn", "multi-turn", "system"}
    families = {("chat" if f in chat else f) for f in report.formats}
    if len(families) > 1:
        issues.add("warning", "mixed", 0, "the file mixes formats: " + ", ".join(
            f"{n} {f}" for f, n in sorted(report.formats.items())),
            "mixing is fine if intended; a stray format usually means a conversion bug")
    if val_fraction > 0:
        _held_out_sizes(report, split_keys, issues)
    if val_path:
        _val_file_sizes(report, Path(val_path), seen, issues)
    if report.samples == 0 and not report.errors:
        issues.add("error", "empty", 0, "the file has no samples", "add lines like {\"text\": \"User: …\\n\\nAssistant: …\"}")
    return report



@dataclass
class CrossDuplicate:
    """A text of one file that an earlier file (of those checked together) already holds."""

    path: str
    line: int
    first_path: str
    first_line: int


@dataclass
class SourcesReport:
    """`data check A B …`: each file's report, and the texts repeated across the files."""

    reports: list[CheckReport]
    cross_duplicates: int = 0
    examples: list[CrossDuplicate] = field(default_factory=list)  # the first MAX_ISSUES_PER_KIND of them

    @property
    def ok(self) -> bool:
        return all(report.ok for report in self.reports)

    def to_dict(self) -> dict:
        return {"ok": self.ok, "files": [report.to_dict() for report in self.reports],
                "cross_duplicates": self.cross_duplicates, "cross_duplicate_examples": [asdict(e) for e in self.examples]}


def cross_file_duplicates(paths: list[str | Path]) -> tuple[int, list[CrossDuplicate]]:
    """Texts found in more than one of the files: each counted in the later file, with where it was
    first seen. Duplicates inside one file are `CheckReport.duplicates`' business, not counted here."""
    first_seen: dict[bytes, tuple[str, int]] = {}
    count, examples = 0, []
    for path in paths:
        here: dict[bytes, int] = {}
        for sample in read_samples(path):
            if sample.text is None:
                continue
            digest = text_digest(sample.text)
            earlier = first_seen.get(digest)
            if earlier is not None and earlier[0] != str(path):
                count += 1
                if len(examples) < MAX_ISSUES_PER_KIND:
                    examples.append(CrossDuplicate(str(path), sample.line, *earlier))
            here.setdefault(digest, sample.line)
        for digest, line in here.items():
            first_seen.setdefault(digest, (str(path), line))
    return count, examples


def check_files(paths: list[str | Path], ctx_len: int = 1024, micro_bsz: int = 1,
                progress: Callable[[int, int], None] | None = None,
                cancel: Callable[[], bool] | None = None, **split) -> SourcesReport:
    """`check_jsonl` on every file (`split`: its validation-split options), then the texts the files share."""
    reports = [check_jsonl(path, ctx_len=ctx_len, micro_bsz=micro_bsz, progress=progress, cancel=cancel, **split)
               for path in paths]
    count, examples = cross_file_duplicates(paths) if len(paths) > 1 else (0, [])
    return SourcesReport(reports, count, examples)


def _held_out_sizes(report: CheckReport, split_keys: list[int], issues: _Collector) -> None:
    """The documents and tokens val_fraction holds out (`split.held_out_mask`, as training does)."""
    try:
        held_out = held_out_mask(np.array(split_keys, dtype=np.uint64), report.val_fraction, report.path)
    except DataError as exc:
        issues.add("error", "val-split", 0, exc.message, exc.hint or "")
        return
    counts = np.array(report.token_counts[:len(held_out)], dtype=np.int64)
    report.val_documents = int(held_out.sum())
    report.val_tokens = int(counts[held_out].sum()) + report.val_documents


def _val_file_sizes(report: CheckReport, val_path: Path, seen: dict[bytes, int], issues: _Collector) -> None:
    """The validation file's documents and tokens; its bad records and the documents it shares
    with the training data are reported (a shared document is no held-out test)."""
    from rwkv_tui.trainer.world_tokenizer import get_tokenizer

    if not val_path.exists():
        issues.add("error", "val-file", 0, f"the validation file {val_path} does not exist",
                   "give an existing record file as the validation data, or leave it out")
        return
    tokenizer = get_tokenizer()
    bad, shared, batch = 0, 0, []
    for sample in read_samples(val_path):
        if sample.error is not None:
            bad += 1
        elif sample.text is not None:
            report.val_documents += 1
            shared += text_digest(sample.text) in seen
            batch.append(sample.text)
        if len(batch) >= 512:
            report.val_tokens += sum(len(ids) + 1 for ids in tokenizer.encode_batch(batch))
            batch.clear()
    report.val_tokens += sum(len(ids) + 1 for ids in tokenizer.encode_batch(batch))
    if bad:
        issues.add("error", "val-file", 0, f"the validation file {val_path} has {bad} bad record(s)",
                   f"`rwkv-tui data check {val_path}` lists them")
    if shared:
        issues.add("warning", "val-overlap", 0, f"{shared} validation document(s) also appear in the training data",
                   "remove them from one side: a document the model trained on does not measure learning")
