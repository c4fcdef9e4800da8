"""Record formats people hold their data in, converted to RWKV World text.

Each record is recognised by its own fields (so every reader, span and worker agrees on it):

    {"text": s}                                   text             taken as is (records.py keeps its rules)
    {"messages": [{"role", "content"}, …]}        OpenAI messages  System: / User: / Assistant: turns
    {"conversations": [{"from", "value"}, …]}     ShareGPT         the same turns
    {"instruction", "input"?, "output"}           Alpaca           Instruction: / Input: / Response:
    {"prompt", "completion"}, {"prompt", "response"},
    {"question", "answer"}                        pairs            User: / Assistant:

Turns are joined by one blank line. Inside a turn: CRLF -> LF, every run of two or more
newlines -> one "\n" (a blank line ends a turn), leading and trailing whitespace stripped.
A `<think>…</think>` block in an assistant's content is kept verbatim, blank lines included.
Empty system turns (common in ShareGPT exports) are dropped; other empty turns are errors.

Problems name the field ("messages[2].role 'tool' is not supported …"); the reader adds the
file and the record's line or row. No torch, no numpy: the wizard imports this module.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

TEXT = "text"
MESSAGES = "OpenAI messages"
SHAREGPT = "ShareGPT"
ALPACA = "Alpaca"
PROMPT_COMPLETION = "prompt/completion"
PROMPT_RESPONSE = "prompt/response"
QUESTION_ANSWER = "question/answer"

TURN_SEPARATOR = "\n\n"
_NEWLINE_RUN = re.compile(r"\n{2,}")
_THINK_BLOCK = re.compile(r"(<think>.*?</think>)", re.DOTALL)
_MESSAGE_ROLES = {"system": "System", "user": "User", "assistant": "Assistant"}
_SHAREGPT_ROLES = {"system": "System", "human": "User", "user": "User", "gpt": "Assistant", "assistant": "Assistant"}
_PAIRS = ((PROMPT_COMPLETION, "prompt", "completion"), (PROMPT_RESPONSE, "prompt", "response"),
          (QUESTION_ANSWER, "question", "answer"))
SUPPORTED_HINT = ('use one of: {"text"}, {"messages": [{"role", "content"}]}, {"conversations": [{"from", "value"}]}, '
                  '{"instruction", "input", "output"}, {"prompt", "completion"}, {"prompt", "response"}, '
                  '{"question", "answer"}')


@dataclass(frozen=True)
class FormatProblem:
    """What stops a record converting (or, as a warning, what it probably lacks); the message
    starts with the field it is about."""

    kind: str
    message: str
    hint: str = ""


@dataclass(frozen=True)
class Converted:
    """A record as RWKV World text, with the warnings its conversion found."""

    text: str
    warnings: tuple[FormatProblem, ...] = ()


@dataclass(frozen=True)
class _Turn:
    role: str  # World role name: System, User, Assistant
    content: str  # cleaned
    field: str  # where it came from, e.g. messages[2]


def record_format(record: dict) -> str | None:
    """The format a record's fields show, or None. The first matching key wins, so a record
    that carries a ready "text" beside its source fields trains on that text."""
    if "text" in record:
        return TEXT
    if "messages" in record:
        return MESSAGES
    if "conversations" in record:
        return SHAREGPT
    if "instruction" in record:
        return ALPACA
    for name, first, second in _PAIRS:
        if first in record and second in record:
            return name
    if "prompt" in record:  # a pair missing its second half: say what is missing
        return PROMPT_COMPLETION
    if "question" in record:
        return QUESTION_ANSWER
    return None


def convert(record: dict, fmt: str) -> Converted | FormatProblem:
    """A non-text record (see `record_format`) as World text, or the first thing wrong with it."""
    return _CONVERTERS[fmt](record)


def quick_convert(record: dict) -> tuple[str, str] | None:
    """(format, World text) of a non-text record in the common, well-formed case, without
    building `Converted` or any problem: the readers call it for every record of a big file.
    None for anything else (a pair format too): `convert` then gives the text or names the
    problem. Where both answer, the text is the same (tests compare them)."""
    if "messages" in record:
        items = record["messages"]
        text = _plain_conversation(items, "role", "content", _MESSAGE_ROLES) if type(items) is list else None
        return None if text is None else (MESSAGES, text)
    if "conversations" in record:
        items = record["conversations"]
        text = _plain_conversation(items, "from", "value", _SHAREGPT_ROLES) if type(items) is list else None
        return None if text is None else (SHAREGPT, text)
    if "instruction" in record:
        text = _plain_alpaca(record)
        return None if text is None else (ALPACA, text)
    return None


def clean(content: str) -> str:
    """A turn's content the way the tutorials write it: LF only, no blank line, no outer whitespace."""
    if "\n" not in content:  # most turns: nothing to fold (a lone CR is kept either way)
        return content.strip()
    return _NEWLINE_RUN.sub("\n", content.replace("\r\n", "\n")).strip()


def clean_answer(content: str) -> str:
    """`clean`, except that `<think>…</think>` blocks are kept byte for byte."""
    if "<think>" not in content:
        return clean(content)
    parts = _THINK_BLOCK.split(content)  # odd indexes are the think blocks
    kept = [part if i % 2 else _NEWLINE_RUN.sub("\n", part.replace("\r\n", "\n")) for i, part in enumerate(parts)]
    return "".join(kept).strip()


def _type_name(value: object) -> str:
    return "null" if value is None else type(value).__name__


def _string_field(record: dict, key: str, where: str, *, required: bool = True) -> str | FormatProblem | None:
    """record[key] as a string; None when optional and absent (or null)."""
    value = record.get(key)
    if value is None:
        if not required:
            return None
        return FormatProblem("missing-field", f"{where} has no '{key}'", f"add '{key}' to every record")
    if not isinstance(value, str):
        prefix = f"{where}.{key}" if where != "the record" else key
        return FormatProblem("field-type", f"{prefix} is a {_type_name(value)}, not a string",
                             f"make '{key}' one string")
    return value


def _conversation(record: dict, key: str, role_key: str, content_key: str,
                  roles: dict[str, str]) -> Converted | FormatProblem:
    items = record[key]
    if not isinstance(items, list):
        return FormatProblem("field-type", f"{key} is a {_type_name(items)}, not a list",
                             f"make '{key}' a list of {{'{role_key}', '{content_key}'}} objects")
    text = _plain_conversation(items, role_key, content_key, roles)
    if text is not None:
        return Converted(text)
    turns = []  # something unusual: turn by turn, naming the problem (or skipping an empty system turn)
    for index, item in enumerate(items):
        turn = _conversation_turn(item, f"{key}[{index}]", role_key, content_key, roles)
        if isinstance(turn, FormatProblem):
            return turn
        if turn is not None:
            turns.append(turn)
    if not turns:
        return FormatProblem("empty-conversation", f"{key} is an empty conversation",
                             "remove the record, or give it at least one user and one assistant turn")
    return Converted(TURN_SEPARATOR.join(f"{t.role}: {t.content}" for t in turns), _last_turn_warnings(turns))


def _plain_conversation(items: list, role_key: str, content_key: str, roles: dict[str, str]) -> str | None:
    """The common case in one tight loop (it runs for every record of a big file): every turn a
    dict with a known string role and non-empty string content, the assistant's last. None for
    anything else, which the careful path converts or names; both give the same text."""
    parts = []
    role = None
    for item in items:
        if type(item) is not dict:
            return None
        name, content = item.get(role_key), item.get(content_key)
        if type(name) is not str or type(content) is not str:
            return None
        role = roles.get(name)
        if role is None:
            return None
        if "\n" in content or "<think>" in content:
            content = clean_answer(content) if role == "Assistant" else clean(content)
        else:
            content = content.strip()
        if not content:
            return None
        parts.append(f"{role}: {content}")
    return TURN_SEPARATOR.join(parts) if role == "Assistant" else None


def _conversation_turn(item: object, where: str, role_key: str, content_key: str,
                       roles: dict[str, str]) -> _Turn | FormatProblem | None:
    """One turn, cleaned; None for an empty system turn (no system prompt)."""
    if not isinstance(item, dict):
        return FormatProblem("field-type", f"{where} is a {_type_name(item)}, not an object",
                             f"write each turn as {{'{role_key}': …, '{content_key}': …}}")
    role = _string_field(item, role_key, where)
    if isinstance(role, FormatProblem):
        return role
    if role not in roles:
        return FormatProblem("role", f"{where}.{role_key} '{role}' is not supported ({', '.join(roles)})",
                             "drop or rename that turn (tool and function turns have no RWKV World role)")
    content = _string_field(item, content_key, where)
    if isinstance(content, FormatProblem):
        return content
    world_role = roles[role]
    cleaned = clean_answer(content) if world_role == "Assistant" else clean(content)
    if cleaned:
        return _Turn(world_role, cleaned, where)
    if world_role == "System":
        return None
    return FormatProblem("empty-turn", f"{where}.{content_key} is empty", "remove the turn or fill it in")


def _last_turn_warnings(turns: list[_Turn]) -> tuple[FormatProblem, ...]:
    last = turns[-1]
    if last.role == "Assistant":
        return ()
    return (FormatProblem("no-answer", f"{last.field} is the last turn and is {last.role}'s, not the assistant's",
                          "end every conversation with an assistant turn so there is something to learn"),)


def _messages(record: dict) -> Converted | FormatProblem:
    return _conversation(record, "messages", "role", "content", _MESSAGE_ROLES)


def _sharegpt(record: dict) -> Converted | FormatProblem:
    return _conversation(record, "conversations", "from", "value", _SHAREGPT_ROLES)


def _alpaca(record: dict) -> Converted | FormatProblem:
    parts = []
    for key, label, required in (("instruction", "Instruction", True), ("input", "Input", False),
                                 ("output", "Response", True)):
        value = _string_field(record, key, "the record", required=required)
        if isinstance(value, FormatProblem):
            return value
        cleaned = clean(value or "")
        if cleaned:
            parts.append(f"{label}: {cleaned}")
        elif required:
            return FormatProblem("empty-turn", f"{key} is empty", "remove the record or fill it in")
    return Converted(TURN_SEPARATOR.join(parts))


def _plain_alpaca(record: dict) -> str | None:
    """`_alpaca`'s text when instruction and output are non-empty strings and input is a string
    or absent; None otherwise."""
    instruction, given, output = record.get("instruction"), record.get("input"), record.get("output")
    if type(instruction) is not str or type(output) is not str or (given is not None and type(given) is not str):
        return None
    instruction, given, output = clean(instruction), clean(given) if given else "", clean(output)
    if not instruction or not output:
        return None
    middle = f"Input: {given}{TURN_SEPARATOR}" if given else ""
    return f"Instruction: {instruction}{TURN_SEPARATOR}{middle}Response: {output}"


def _pair(first: str, second: str) -> Callable[[dict], Converted | FormatProblem]:
    def convert_pair(record: dict) -> Converted | FormatProblem:
        turns = []
        for key, role in ((first, "User"), (second, "Assistant")):
            value = _string_field(record, key, "the record")
            if isinstance(value, FormatProblem):
                return value
            cleaned = clean_answer(value) if role == "Assistant" else clean(value)
            if not cleaned:
                return FormatProblem("empty-turn", f"{key} is empty", "remove the record or fill it in")
            turns.append(f"{role}: {cleaned}")
        return Converted(TURN_SEPARATOR.join(turns))

    return convert_pair


_CONVERTERS: dict[str, Callable[[dict], Converted | FormatProblem]] = {
    MESSAGES: _messages, SHAREGPT: _sharegpt, ALPACA: _alpaca,
    **{name: _pair(first, second) for name, first, second in _PAIRS},
}
