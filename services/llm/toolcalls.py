"""Streaming tool-call parser: splits model text into plain text and ``<tool_call>{json}</tool_call>`` blocks.

Text outside tool-call blocks is released as soon as it cannot be the start of ``<tool_call>`` (so the TTS gets
words with no extra delay); a block is parsed when it closes, or at the end of the stream when the model stopped on
``</tool_call>`` (a stop word) or ran out of tokens. Accepted JSON: ``{"name": str, "arguments": object | JSON
string}`` (``parameters`` is accepted for ``arguments``); the first balanced ``{...}`` inside the block is used, so
stray words around it are tolerated. Calls to unknown tools or unparseable blocks are dropped (and counted).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from services.llm.templates import TOOL_CALL_CLOSE, TOOL_CALL_OPEN


@dataclass
class ParsedToolCall:
    id: str
    name: str
    arguments_json: str


@dataclass
class ParseEvent:
    text: str = ""
    tool_call: ParsedToolCall | None = None


def _first_json_object(s: str) -> str | None:
    start = s.find("{")
    while start != -1:
        depth = 0
        in_str = False
        esc = False
        for i in range(start, len(s)):
            ch = s[i]
            if in_str:
                if esc:
                    esc = False
                elif ch == "\\":
                    esc = True
                elif ch == '"':
                    in_str = False
            elif ch == '"':
                in_str = True
            elif ch == "{":
                depth += 1
            elif ch == "}":
                depth -= 1
                if depth == 0:
                    return s[start : i + 1]
        start = s.find("{", start + 1)
    return None


def parse_call(body: str, allowed: Iterable[str] | None = None) -> tuple[str, dict] | None:
    """(name, arguments) from the inside of a tool-call block, or None if it is not a usable call."""
    raw = _first_json_object(body)
    if raw is None:
        return None
    try:
        obj = json.loads(raw)
    except ValueError:
        try:  # single quotes / trailing commas from a small model
            obj = json.loads(re.sub(r",\s*([}\]])", r"\1", raw.replace("'", '"')))
        except ValueError:
            return None
    if not isinstance(obj, dict):
        return None
    name = obj.get("name") or obj.get("tool") or obj.get("function")
    if isinstance(name, dict):  # {"function": {"name":..., "arguments":...}}
        obj, name = name, name.get("name")
    if not isinstance(name, str) or not name:
        return None
    args = obj.get("arguments", obj.get("parameters", {}))
    if isinstance(args, str):
        try:
            args = json.loads(args) if args.strip() else {}
        except ValueError:
            return None
    if args is None:
        args = {}
    if not isinstance(args, dict):
        return None
    allowed_set = set(allowed) if allowed is not None else None
    if allowed_set is not None and name not in allowed_set:
        return None
    return name, args


@dataclass
class ToolCallParser:
    """Feed text deltas; get ParseEvents (text or a complete tool call)."""

    allowed: set[str] | None = None
    id_prefix: str = "call"
    calls: list[ParsedToolCall] = field(default_factory=list)
    dropped: int = 0
    _buf: str = ""
    _in_call: bool = False

    def _make(self, body: str) -> ParsedToolCall | None:
        parsed = parse_call(body, self.allowed)
        if parsed is None:
            self.dropped += 1
            return None
        call = ParsedToolCall(f"{self.id_prefix}_{len(self.calls)}", parsed[0], json.dumps(parsed[1]))
        self.calls.append(call)
        return call

    def feed(self, delta: str) -> list[ParseEvent]:
        self._buf += delta
        out: list[ParseEvent] = []
        while self._buf:
            if self._in_call:
                end = self._buf.find(TOOL_CALL_CLOSE)
                if end == -1:
                    break
                call = self._make(self._buf[:end])
                if call:
                    out.append(ParseEvent(tool_call=call))
                self._buf = self._buf[end + len(TOOL_CALL_CLOSE) :]
                self._in_call = False
                continue
            start = self._buf.find(TOOL_CALL_OPEN)
            if start != -1:
                if start:
                    out.append(ParseEvent(text=self._buf[:start]))
                self._buf = self._buf[start + len(TOOL_CALL_OPEN) :]
                self._in_call = True
                continue
            # Keep back a tail that could be the beginning of "<tool_call>".
            keep = 0
            for n in range(min(len(TOOL_CALL_OPEN) - 1, len(self._buf)), 0, -1):
                if TOOL_CALL_OPEN.startswith(self._buf[-n:]):
                    keep = n
                    break
            emit = self._buf[: len(self._buf) - keep]
            if emit:
                out.append(ParseEvent(text=emit))
            self._buf = self._buf[len(self._buf) - keep :]
            break
        return out

    def finish(self) -> list[ParseEvent]:
        """End of stream: an open block is parsed as a call (the model stopped on the closing tag)."""
        out: list[ParseEvent] = []
        if self._in_call:
            call = self._make(self._buf)
            if call:
                out.append(ParseEvent(tool_call=call))
        elif self._buf:
            out.append(ParseEvent(text=self._buf))
        self._buf = ""
        self._in_call = False
        return out
