"""Reading instruction data the way users keep it, and turning it into the prompt-completion rows a
trainer sees, for ``plw-plugins stats`` and ``plw-plugins demo``.

Files: JSON (a list of objects), JSON Lines, or a folder written by ``datasets``' ``save_to_disk``.
Formats: Alpaca (``instruction``, optional ``input``, ``output``), prompt-completion (``prompt``,
``completion``, as text or as lists of messages) and conversational (``messages``). Every format
becomes ``{"prompt": ..., "completion": ...}``, the shape TRL's ``SFTTrainer`` masks by itself:
Alpaca through a prompt template, conversations split before their last assistant turn. Rows that
cannot be used (a missing or empty field, a line that is not JSON) are counted by reason, never raised on.
"""

from __future__ import annotations

import json
import string
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from plw_plugins.roles import PROMPT_CONTENT_KEY

FORMATS = ("alpaca", "prompt-completion", "messages")

# The Stanford Alpaca prompts: one for rows with an input, one for rows without.
ALPACA_TEMPLATE = (
    "Below is an instruction that describes a task, paired with an input that provides further context. "
    "Write a response that appropriately completes the request.\n\n"
    "### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:\n"
)
ALPACA_TEMPLATE_NO_INPUT = (
    "Below is an instruction that describes a task. Write a response that appropriately completes the request.\n\n"
    "### Instruction:\n{instruction}\n\n### Response:\n"
)


class DataError(ValueError):
    """The data cannot be read or has no usable format; the message says which file and why."""


@dataclass(frozen=True)
class InvalidLine:
    """A JSON Lines line that does not parse, kept in place of its record so that it is counted as skipped."""

    number: int


class TemplatedRow(dict):
    """A text ``{"prompt", "completion"}`` row whose prompt a template built from the data's fields.

    It is the plain dict the trainer takes; ``content_spans`` also remembers the character ranges of
    ``prompt`` that the data wrote (Alpaca's instruction and input), so that lengths can be counted
    as the study counts them, without the template.
    """

    content_spans: tuple[tuple[int, int], ...] = ()

    def as_record(self) -> dict:
        """The row as a plain dict for a ``Dataset``, the content spans in the column the trainer reads
        to tell the template's tokens from the data's (``plw_prompt_content``)."""
        return {**self, PROMPT_CONTENT_KEY: [list(span) for span in self.content_spans]}


@dataclass
class PromptCompletionRows:
    """Usable rows as ``{"prompt", "completion"}`` (text, or lists of messages) and why others were skipped."""

    format: str
    rows: list[dict[str, Any]]
    skipped: Counter = field(default_factory=Counter)

    @property
    def skipped_rows(self) -> int:
        return sum(self.skipped.values())


def read_records(path: str | Path, *, split: str | None = None) -> list[Any]:
    """The records of a JSON or JSON Lines file, or of a dataset saved with ``save_to_disk``.

    A saved ``DatasetDict`` needs ``split`` unless it has a ``train`` split or a single one; a file
    has no splits. JSON Lines lines that do not parse are kept as :class:`InvalidLine` so that they
    are counted as skipped, by line number.
    """
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: no such file or folder")
    if path.is_dir():
        return _read_saved_dataset(path, split)
    if split is not None:
        raise DataError(f"{path}: --split {split!r} given, but a JSON or JSON Lines file has no splits "
                        "(--split chooses a split of a folder written by save_to_disk)")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise DataError(f"{path}: cannot be read as UTF-8 text ({error})") from error
    if path.suffix != ".jsonl":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as error:
            if text.lstrip().startswith("["):
                raise DataError(f"{path}: not valid JSON ({error})") from error
            # otherwise perhaps JSON Lines under another name
        else:
            if isinstance(data, dict):
                return [data]
            if not isinstance(data, list):
                raise DataError(f"{path}: JSON must be a list of objects, found {type(data).__name__}")
            if not data:
                raise DataError(f"{path}: the file has no rows (an empty JSON list)")
            return data
    records: list[Any] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            records.append(InvalidLine(number))
    if not records:
        raise DataError(f"{path}: the file has no rows (it is empty)")
    if all(isinstance(record, InvalidLine) for record in records):
        raise DataError(f"{path}: neither a JSON list nor JSON Lines (no line parses as JSON)")
    return records


def _read_saved_dataset(path: Path, split: str | None) -> list[Any]:
    if not any((path / name).exists() for name in ("dataset_info.json", "state.json", "dataset_dict.json")):
        raise DataError(f"{path}: a folder, but not a dataset saved with `save_to_disk` (no dataset_info.json)")
    try:
        from datasets import DatasetDict, load_from_disk
    except ImportError as error:
        raise DataError(f"{path}: reading a saved dataset needs `datasets` (pip install plw-plugins[stats])") from error
    try:
        dataset = load_from_disk(str(path))
    except Exception as error:  # datasets raises several unrelated types for a damaged folder
        raise DataError(f"{path}: cannot be loaded with datasets.load_from_disk ({error})") from error
    if isinstance(dataset, DatasetDict):
        names = list(dataset)
        if split is None:
            split = "train" if "train" in names else names[0] if len(names) == 1 else None
        if split not in names:
            raise DataError(f"{path}: choose a split with --split, one of {names}")
        dataset = dataset[split]
    elif split is not None:
        raise DataError(f"{path}: --split {split!r} given, but the saved dataset has no splits")
    return dataset.to_list()


def detect_format(records: list[Any]) -> str:
    """The format of the first record that names one: ``messages``, ``prompt-completion`` or ``alpaca``."""
    for record in records:
        if not isinstance(record, dict):
            continue
        if "messages" in record:
            return "messages"
        if "prompt" in record or "completion" in record:
            return "prompt-completion"
        if "instruction" in record or "output" in record:
            return "alpaca"
    keys = sorted({key for record in records[:100] if isinstance(record, dict) for key in record})
    raise DataError(
        f"unknown data format: no record has `messages`, `prompt`/`completion` or `instruction`/`output` "
        f"(keys seen: {keys}); choose one with --format {{{','.join(FORMATS)}}}"
    )


def template_argument(value: str | None) -> str | None:
    """A ``--template`` value: the template itself, or ``@FILE`` to read it from FILE."""
    if value is None or not value.startswith("@"):
        return value
    try:
        return Path(value[1:]).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise DataError(f"--template {value}: cannot read the template file ({error})") from error


def validate_template(template: str) -> str:
    """``template`` if it is a ``str.format`` string naming ``{instruction}`` and at most ``{input}``."""
    try:
        names = {name for _, name, _, _ in string.Formatter().parse(template) if name is not None}
    except ValueError as error:
        raise DataError(f"template {template!r} is not a valid format string ({error})") from error
    if "instruction" not in names:
        raise DataError(f"template {template!r} must contain {{instruction}}")
    unknown = names - {"instruction", "input"}
    if unknown:
        raise DataError(f"template {template!r} has unknown fields {sorted(unknown)}; use {{instruction}} and {{input}}")
    return template


def _text(record: dict, key: str) -> str | None:
    value = record.get(key)
    return value if isinstance(value, str) and value.strip() else None


def to_prompt_completion(records: list[Any], data_format: str | None = None, *, template: str | None = None) -> PromptCompletionRows:
    """Every usable record as ``{"prompt", "completion"}``, with skipped records counted by reason.

    ``template`` replaces the Alpaca prompts (one ``str.format`` string with ``{instruction}`` and
    optionally ``{input}``; an empty input is formatted as ``""``).
    """
    data_format = data_format or detect_format(records)
    if data_format not in FORMATS:
        raise DataError(f"unknown format {data_format!r}; choose one of {list(FORMATS)}")
    if template is not None:
        validate_template(template)
    convert = {"alpaca": _alpaca, "prompt-completion": _prompt_completion, "messages": _messages}[data_format]
    result = PromptCompletionRows(format=data_format, rows=[])
    invalid_lines = []
    for record in records:
        if isinstance(record, InvalidLine):
            invalid_lines.append(record.number)
            continue
        if not isinstance(record, dict):
            result.skipped["not a JSON object"] += 1
            continue
        row = convert(record, template) if data_format == "alpaca" else convert(record)
        if isinstance(row, str):
            result.skipped[row] += 1
        else:
            result.rows.append(row)
    if invalid_lines:
        result.skipped[f"not valid JSON ({describe_lines(invalid_lines)})"] = len(invalid_lines)
    return result


def describe_lines(numbers: list[int], shown: int = 5) -> str:
    """``"line 7"``, ``"lines 3, 7, 9"`` or ``"lines 3, 7, 9, 12, 15 and 4 more"``."""
    listed = ", ".join(map(str, numbers[:shown]))
    more = f" and {len(numbers) - shown} more" if len(numbers) > shown else ""
    return f"line{'s' if len(numbers) > 1 else ''} {listed}{more}"


def alpaca_to_prompt_completion(record: dict, template: str | None = None) -> TemplatedRow:
    """One Alpaca record as ``prompt`` and ``completion``: the Stanford Alpaca prompts, or ``template``.

    The one conversion every command uses, so that ``plw-plugins stats`` counts what ``sft`` and
    ``demo`` train on."""
    row = _alpaca(record, template)
    if isinstance(row, str):
        raise DataError(f"Alpaca row {record!r}: {row}")
    return row


def _alpaca(record: dict, template: str | None) -> TemplatedRow | str:
    instruction, output = _text(record, "instruction"), _text(record, "output")
    if instruction is None:
        return "missing or empty `instruction`"
    if output is None:
        return "missing or empty `output`"
    extra = record.get("input")
    extra = extra if isinstance(extra, str) and extra.strip() else ""
    if template is None:
        template = ALPACA_TEMPLATE if extra else ALPACA_TEMPLATE_NO_INPUT
    prompt, spans = format_with_spans(template, {"instruction": instruction, "input": extra})
    row = TemplatedRow(prompt=prompt, completion=output)
    row.content_spans = spans
    return row


def format_with_spans(template: str, values: dict[str, str]) -> tuple[str, tuple[tuple[int, int], ...]]:
    """``template.format(**values)`` and the character ranges in it where a non-empty value went."""
    formatter = string.Formatter()
    pieces: list[str] = []
    spans = []
    length = 0
    for literal, name, spec, conversion in formatter.parse(template):
        pieces.append(literal)
        length += len(literal)
        if name is None:
            continue
        value = formatter.format_field(formatter.convert_field(values[name], conversion), spec or "")
        if value:
            spans.append((length, length + len(value)))
        pieces.append(value)
        length += len(value)
    return "".join(pieces), tuple(spans)


def _prompt_completion(record: dict) -> dict | str:
    prompt, completion = record.get("prompt"), record.get("completion")
    if isinstance(prompt, list) and isinstance(completion, list):
        if not prompt or not _valid_messages(prompt):
            return "missing or empty `prompt` messages"
        if not completion or not _valid_messages(completion):
            return "missing or empty `completion` messages"
        return {"prompt": prompt, "completion": completion}
    if _text(record, "prompt") is None:
        return "missing or empty `prompt`"
    if _text(record, "completion") is None:
        return "missing or empty `completion`"
    return {"prompt": prompt, "completion": completion}


def _valid_messages(messages: list) -> bool:
    return all(
        isinstance(message, dict) and isinstance(message.get("role"), str) and isinstance(message.get("content"), str)
        for message in messages
    )


def _messages(record: dict) -> dict | str:
    messages = record.get("messages")
    if not isinstance(messages, list) or not messages or not _valid_messages(messages):
        return "missing or malformed `messages`"
    last = max((i for i, message in enumerate(messages) if message["role"] == "assistant"), default=None)
    if last is None:
        return "no assistant turn in `messages`"
    if not messages[last]["content"].strip():
        return "empty last assistant turn"
    if last == 0:
        return "no prompt before the last assistant turn"
    return {"prompt": messages[:last], "completion": [messages[last]]}
