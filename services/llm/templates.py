"""Chat templates: conversation (llm.proto messages) -> the prompt string sent as Triton `text_input`.

* embedded profile, SmolLM2-Instruct (ChatML): ``<|im_start|>{role}\\n{content}<|im_end|>\\n`` per turn, generation
  prompt ``<|im_start|>assistant\\n``.
* stepaudio profile, Step1 (Step-Audio-Chat): ``<|BOT|>{role}\\n{content}<|EOT|>`` per turn with roles system, human,
  assistant; generation prompt ``<|BOT|>assistant\\n``; audio tokens as ``<audio_X>`` (X in 0..5119).

Tools (both): the system prompt lists the tools and asks for
``<tool_call>{"name": ..., "arguments": {...}}</tool_call>``; earlier calls are rendered the same way in
assistant turns and tool results as ``<tool_response>`` in a user turn.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from services.kit.errors import InvalidArgument
from stepaudio.llm.v1 import llm_pb2

TOOL_CALL_OPEN = "<tool_call>"
TOOL_CALL_CLOSE = "</tool_call>"
AUDIO_TOKEN_MAX = 5119

TOOLS_INSTRUCTIONS = (
    "You can call these tools:\n{tools}\n"
    "To call a tool, answer with exactly one line and nothing else:\n"
    '<tool_call>{{"name": "<tool name>", "arguments": {{<arguments as JSON>}}}}</tool_call>\n'
    "Only call a tool when it is needed; otherwise answer normally."
)


@dataclass(frozen=True)
class ChatTemplate:
    """How one model family wants its prompt."""

    name: str
    roles: dict[int, str]
    turn: str  # format with role, content
    generation_prompt: str
    stop_words: tuple[str, ...]
    end_id: int | None = None
    allow_audio: bool = False
    default_system: str = ""
    tool_result_role: int = llm_pb2.ROLE_USER
    extra: dict[str, str] = field(default_factory=dict)


SMOLLM2 = ChatTemplate(
    name="smollm2",
    roles={llm_pb2.ROLE_SYSTEM: "system", llm_pb2.ROLE_USER: "user", llm_pb2.ROLE_ASSISTANT: "assistant"},
    turn="<|im_start|>{role}\n{content}<|im_end|>\n",
    generation_prompt="<|im_start|>assistant\n",
    stop_words=("<|im_end|>", "<|im_start|>"),
    default_system="You are a helpful voice assistant. Answer briefly in plain sentences.",
)

STEP1 = ChatTemplate(
    name="step1",
    roles={llm_pb2.ROLE_SYSTEM: "system", llm_pb2.ROLE_USER: "human", llm_pb2.ROLE_ASSISTANT: "assistant"},
    turn="<|BOT|>{role}\n{content}<|EOT|>",
    generation_prompt="<|BOT|>assistant\n",
    stop_words=("<|EOT|>", "<|BOT|>"),
    end_id=3,
    allow_audio=True,
    default_system="You are a helpful assistant.",
)

TEMPLATES = {"embedded": SMOLLM2, "stepaudio": STEP1, "smollm2": SMOLLM2, "step1": STEP1}


def audio_tokens_text(ids: list[int] | tuple[int, ...]) -> str:
    bad = [i for i in ids if not 0 <= i <= AUDIO_TOKEN_MAX]
    if bad:
        raise InvalidArgument(f"audio token ids must be in 0..{AUDIO_TOKEN_MAX}; got {bad[:5]}")
    return "".join(f"<audio_{i}>" for i in ids)


def tools_system_text(tools: list[llm_pb2.ToolDefinition]) -> str:
    lines = []
    for t in tools:
        if not t.name:
            raise InvalidArgument("every tool needs a name")
        schema = t.parameters_json_schema or "{}"
        try:
            params = json.loads(schema)
        except ValueError as e:
            raise InvalidArgument(f"tool {t.name!r}: parameters_json_schema is not valid JSON ({e})") from None
        props = params.get("properties", {}) if isinstance(params, dict) else {}
        args = ", ".join(
            f"{k}: {v.get('type', 'any')}" + (f" ({v['description']})" if v.get("description") else "")
            for k, v in props.items()
            if isinstance(v, dict)
        )
        lines.append(f"- {t.name}({args}): {t.description}".rstrip(": "))
    return TOOLS_INSTRUCTIONS.format(tools="\n".join(lines))


def _content_text(msg: llm_pb2.ChatMessage, tpl: ChatTemplate) -> str:
    parts = []
    for part in msg.content:
        kind = part.WhichOneof("part")
        if kind == "text":
            parts.append(part.text)
        elif kind == "audio_tokens":
            if not tpl.allow_audio:
                raise InvalidArgument(
                    f"the {tpl.name} model reads text only: send the transcript instead of audio tokens "
                    "(or use the stepaudio profile)"
                )
            parts.append(audio_tokens_text(list(part.audio_tokens.ids)))
    return "".join(parts)


def render(
    messages: list[llm_pb2.ChatMessage] | tuple[llm_pb2.ChatMessage, ...],
    tools: list[llm_pb2.ToolDefinition] | tuple[llm_pb2.ToolDefinition, ...],
    tpl: ChatTemplate,
    default_system: str | None = None,
) -> str:
    """The full prompt, ending with the generation prompt."""
    if not messages:
        raise InvalidArgument("messages is empty: send at least one user message")
    system_parts: list[str] = []
    turns: list[tuple[str, str]] = []
    for i, msg in enumerate(messages):
        if msg.role == llm_pb2.ROLE_UNSPECIFIED:
            raise InvalidArgument(f"messages[{i}].role is not set")
        text = _content_text(msg, tpl)
        if msg.role == llm_pb2.ROLE_SYSTEM:
            if turns:
                raise InvalidArgument(f"messages[{i}]: system messages must come before the conversation")
            system_parts.append(text)
            continue
        if msg.role == llm_pb2.ROLE_TOOL:
            payload = {"content": text}
            if msg.tool_call_id:
                payload = {"tool_call_id": msg.tool_call_id, **payload}
            turns.append((tpl.roles[tpl.tool_result_role], f"<tool_response>{json.dumps(payload)}</tool_response>"))
            continue
        if msg.role == llm_pb2.ROLE_ASSISTANT and msg.tool_calls:
            calls = []
            for c in msg.tool_calls:
                try:
                    args = json.loads(c.arguments_json or "{}")
                except ValueError:
                    raise InvalidArgument(
                        f"messages[{i}].tool_calls: arguments_json of {c.name!r} is not JSON"
                    ) from None
                calls.append(f"{TOOL_CALL_OPEN}{json.dumps({'name': c.name, 'arguments': args})}{TOOL_CALL_CLOSE}")
            text = "\n".join([t for t in (text,) if t] + calls)
        role = tpl.roles.get(msg.role)
        if role is None:
            raise InvalidArgument(f"messages[{i}]: unknown role {msg.role}")
        turns.append((role, text))
    if not turns:
        raise InvalidArgument("messages has only system messages: add a user message")
    if system_parts:  # an explicit system message wins, even an empty one (then there is no system turn)
        system = "\n\n".join(p for p in system_parts if p)
    else:
        system = tpl.default_system if default_system is None else default_system
    if tools:
        system = (system + "\n\n" if system else "") + tools_system_text(list(tools))
    out = [tpl.turn.format(role=tpl.roles[llm_pb2.ROLE_SYSTEM], content=system)] if system else []
    out.extend(tpl.turn.format(role=role, content=content) for role, content in turns)
    out.append(tpl.generation_prompt)
    return "".join(out)
