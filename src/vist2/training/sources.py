"""Read plain training inputs into records that remember where they came from.

Inputs (nothing is downloaded):
- documents (OCR, OLM): a text file, a directory of text files (recursively: *.txt, *.md, *.text,
  *.jsonl), or JSONL lines `{"text": ...}`. A plain text file is one document.
- chats (SFT): JSONL lines `{"messages": [{"role", "content"}, ...]}` or `{"prompt", "response"}`.
- captions: JSONL lines `{"image": path, "caption": ...}`; a relative image path is read from the
  JSONL file's directory.

Bad records never raise: an empty file, a line with undecodable bytes, a JSONL line that is not
JSON, lacks a key or has a value of the wrong type becomes a `DataProblem` (file + line) in the
caller's `ProblemLog`, and reading goes on. A text file with a few undecodable lines loses those
lines only. Whether the run may go on is the `ProblemLog` budget's call.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from vist2.errors import Vist2Error
from vist2.heldout import check_split, record_in_split, split_text
from vist2.training.problems import DataProblem, ProblemLog

TEXT_SUFFIXES = (".txt", ".md", ".text")
JSONL_SUFFIXES = (".jsonl",)
CHAT_ROLES = ("system", "user", "assistant")


@dataclass(frozen=True)
class Document:
    """A text document (OCR / OLM)."""

    text: str
    source: str
    line: int | None = None  # the JSONL line, None for a whole text file


@dataclass(frozen=True)
class ChatExample:
    """One instruction-tuning example: the query (compressed on its own) and the response."""

    query: str
    response: str
    source: str
    line: int


@dataclass(frozen=True)
class CaptionExample:
    """An image file and its caption."""

    image: str
    caption: str
    source: str
    line: int


# -- files ----------------------------------------------------------------------------------------


def list_files(path: str | Path, suffixes: tuple[str, ...]) -> list[Path]:
    """`path` itself, or the files under directory `path` with one of `suffixes` (sorted)."""
    path = Path(path)
    if path.is_file():
        return [path]
    if path.is_dir():
        files = sorted(
            p
            for p in path.rglob("*")
            if p.is_file()
            and p.suffix.lower() in suffixes
            and not any(part.startswith(".") for part in p.relative_to(path).parts)  # hidden
        )
        if not files:
            raise Vist2Error(f"{path}: no {'/'.join(suffixes)} files in this directory")
        return files
    raise Vist2Error(f"{path}: no such file or directory")


def _decoded_lines(path: Path, problems: ProblemLog) -> Iterator[tuple[int, str]]:
    """(line number, text) of each line of `path` that is valid UTF-8; others become problems.

    Lines keep their end-of-line characters, so joining them gives the file back.
    """
    data = path.read_bytes()
    if not data.strip():
        problems.add(DataProblem(str(path), None, "empty file"))
        return
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        pass  # fall through to the line-by-line decode that finds the bad lines
    else:
        yield from enumerate(text.splitlines(keepends=True), start=1)
        return
    for number, raw in enumerate(data.splitlines(keepends=True), start=1):
        try:
            yield number, raw.decode("utf-8")
        except UnicodeDecodeError as err:
            problems.add(
                DataProblem(
                    str(path),
                    number,
                    f"not UTF-8 (byte 0x{raw[err.start]:02x} at column {err.start + 1})",
                )
            )


def _jsonl_objects(path: Path, problems: ProblemLog) -> Iterator[tuple[int, dict]]:
    """(line number, object) of each JSONL line that parses to a JSON object; blank lines skipped."""
    for number, line in _decoded_lines(path, problems):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as err:
            problems.add(
                DataProblem(str(path), number, f"not valid JSON ({err.msg} at column {err.colno})")
            )
            continue
        if not isinstance(obj, dict):
            problems.add(
                DataProblem(str(path), number, f"a JSON {type(obj).__name__}, not an object")
            )
            continue
        yield number, obj


def _string_field(obj: dict, key: str, path: Path, number: int, problems: ProblemLog) -> str | None:
    """obj[key] if it is a non-blank string, else a problem and None."""
    if key not in obj:
        problems.add(DataProblem(str(path), number, f"missing key {key!r}"))
        return None
    value = obj[key]
    if not isinstance(value, str):
        problems.add(
            DataProblem(str(path), number, f"{key!r} must be a string, got {type(value).__name__}")
        )
        return None
    if not value.strip():
        problems.add(DataProblem(str(path), number, f"{key!r} is empty"))
        return None
    return value


# -- documents ------------------------------------------------------------------------------------


def read_documents(path: str | Path, problems: ProblemLog, split: str = "train") -> list[Document]:
    """Documents from a text file, a JSONL file of {"text": ...} or a directory of both.

    `split` picks the part of each file (`vist2.heldout`): "train" (the default) leaves out the
    held-out part that `vist2 eval` measures on, "heldout" reads only that, "all" reads everything.
    """
    check_split(split)
    docs: list[Document] = []
    for file in list_files(path, TEXT_SUFFIXES + JSONL_SUFFIXES):
        if file.suffix.lower() in JSONL_SUFFIXES:
            for number, obj in _jsonl_objects(file, problems):
                if not record_in_split(number, split):
                    continue
                text = _string_field(obj, "text", file, number, problems)
                if text is not None:
                    docs.append(Document(text, str(file), number))
        else:
            text = "".join(line for _, line in _decoded_lines(file, problems))
            text = split_text(text, split)
            if text.strip():
                docs.append(Document(text, str(file)))
            elif text:
                problems.add(DataProblem(str(file), None, "only whitespace"))
    return docs


# -- chats ----------------------------------------------------------------------------------------


def _chat_from_messages(
    messages, file: Path, number: int, problems: ProblemLog
) -> tuple[str, str] | None:
    """(query, response) of a `messages` list: the response is the last (assistant) message; the
    query is the user's text, or, with more than one earlier message, every earlier message as
    "role: content" blocks (they are compressed together)."""

    def bad(reason: str) -> None:
        problems.add(DataProblem(str(file), number, reason))

    if not isinstance(messages, list) or not messages:
        return bad("'messages' must be a non-empty list")
    for i, msg in enumerate(messages):
        if (
            not isinstance(msg, dict)
            or not isinstance(msg.get("role"), str)
            or not isinstance(msg.get("content"), str)
        ):
            return bad(f"messages[{i}] must be an object with string 'role' and 'content'")
        if msg["role"] not in CHAT_ROLES:
            return bad(f"messages[{i}].role must be one of {CHAT_ROLES}, got {msg['role']!r}")
    if messages[-1]["role"] != "assistant":
        return bad("the last message must be the assistant's (it is the response trained on)")
    if not any(m["role"] == "user" for m in messages[:-1]):
        return bad("no user message before the assistant's response")
    earlier = messages[:-1]
    if len(earlier) == 1:
        query = earlier[0]["content"]
    else:
        query = "\n\n".join(f"{m['role']}: {m['content']}" for m in earlier)
    response = messages[-1]["content"]
    if not query.strip() or not response.strip():
        return bad("empty query or response")
    return query, response


def read_chats(path: str | Path, problems: ProblemLog) -> list[ChatExample]:
    """Chat examples from JSONL files ({"messages": [...]} or {"prompt", "response"} per line)."""
    chats: list[ChatExample] = []
    for file in list_files(path, JSONL_SUFFIXES):
        for number, obj in _jsonl_objects(file, problems):
            if "messages" in obj:
                pair = _chat_from_messages(obj["messages"], file, number, problems)
            elif "prompt" in obj or "response" in obj:
                prompt = _string_field(obj, "prompt", file, number, problems)
                response = (
                    _string_field(obj, "response", file, number, problems)
                    if prompt is not None
                    else None
                )
                pair = (prompt, response) if prompt is not None and response is not None else None
            else:
                problems.add(
                    DataProblem(str(file), number, "needs 'messages', or 'prompt' and 'response'")
                )
                pair = None
            if pair is not None:
                chats.append(ChatExample(pair[0], pair[1], str(file), number))
    return chats


# -- captions -------------------------------------------------------------------------------------


def read_captions(path: str | Path, problems: ProblemLog) -> list[CaptionExample]:
    """Caption examples from JSONL files of {"image": path, "caption": ...}.

    Whether an image opens is checked where it is read (in a DataLoader worker), not here.
    """
    examples: list[CaptionExample] = []
    for file in list_files(path, JSONL_SUFFIXES):
        for number, obj in _jsonl_objects(file, problems):
            image = _string_field(obj, "image", file, number, problems)
            caption = (
                _string_field(obj, "caption", file, number, problems) if image is not None else None
            )
            if image is None or caption is None:
                continue
            image_path = Path(image) if Path(image).is_absolute() else file.parent / image
            examples.append(CaptionExample(str(image_path), caption, str(file), number))
    return examples


Reader = Callable[[str | Path, ProblemLog], list]

__all__ = [
    "CaptionExample",
    "ChatExample",
    "Document",
    "list_files",
    "read_captions",
    "read_chats",
    "read_documents",
]
