"""Step-Audio-TTS-3B prompt building and instruction-tag parsing.

Prompt layout (one-shot voice turn, token ids BOS 1, EOT 3, BOT 4), as the reference builds it: its tokenizer
adds BOS to every ``encode()``, so each role segment starts BOS after BOT (texts after a newline do not)::

    [BOS] [BOT] [BOS] system\\n{system prompt} [EOT]
          [BOT] [BOS] human\\n{prompt transcript} [EOT]
          [BOT] [BOS] assistant\\n{prompt audio tokens (65536+X)} [EOT]
          [BOT] [BOS] human\\n{target text, tags included} [EOT]
          [BOT] [BOS] assistant\\n            -> generation continues with audio tokens

Leading instruction tags in ASCII ``()`` or full-width ``（）`` parentheses, possibly chained, steer emotion,
language/dialect, speed and music mode. RAP / 哼唱 switch the system prompt, the voice (``{voice}{tag}``) and
the flow/vocoder weights to the "Music" set.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from models.stepaudio import style
from models.stepaudio.step1 import BOS_ID, BOT_ID, EOT_ID

# The tag vocabulary and its parser live in models.stepaudio.style (the one tag parser of the platform); these
# tuples (same order as the published system prompt lists them) are derived from its tables.
EMOTION_TAGS = tuple(style.EMOTIONS)
LANGUAGE_TAGS = tuple(style.LANGUAGES)
SPEED_TAGS = tuple(style.SPEEDS)
MUSIC_TAGS = tuple(style.MUSIC)
VALID_TAGS = EMOTION_TAGS + LANGUAGE_TAGS + SPEED_TAGS + MUSIC_TAGS
TAG_KIND = {
    **{t: "emotion" for t in EMOTION_TAGS},
    **{t: "language" for t in LANGUAGE_TAGS},
    **{t: "speed" for t in SPEED_TAGS},
    **{t: "music" for t in MUSIC_TAGS},
}

_TAG_LIST_TEXT = (
    "# 情感标签涵盖了多种情绪状态，包括但不限于：\n"
    + "".join(f'- "{t}"\n' for t in EMOTION_TAGS)
    + "\n# 语种或方言标签包含多种语言或方言，包括但不限于：\n"
    + "".join(f'- "{t}"\n' for t in LANGUAGE_TAGS)
    + "\n# 音乐哼唱标签包含多种类型歌曲哼唱，包括但不限于：\n"
    + "".join(f'- "{t}"\n' for t in MUSIC_TAGS)
    + "\n# 语音调整标签，包括但不限于：\n"
    + "".join(f'- "{t}"\n' for t in SPEED_TAGS)
)
_HEAD = "作为一名卓越的声优演员，你的任务是根据文本中（）或()括号内标注的情感、语种或方言、音乐哼唱、语音调整等标签，以丰富细腻的情感和自然顺畅的语调来朗读文本。\n"  # noqa: E501
SYS_PROMPT_WO_SPK = (
    _HEAD
    + _TAG_LIST_TEXT
    + "\n请在朗读时，根据这些情感标签的指示，调整你的情感、语气、语调和哼唱节奏，以确保文本的情感和意义得到准确而生动的传达，"  # noqa: E501
    "如果没有()或（）括号，则根据文本语义内容自由演绎。"
)
SYS_PROMPT_WITH_SPK = (
    _HEAD
    + _TAG_LIST_TEXT
    + "\n请在朗读时，使用[{speaker}]的声音，根据这些情感标签的指示，调整你的情感、语气、语调和哼唱节奏，"
    "以确保文本的情感和意义得到准确而生动的传达，如果没有()或（）括号，则根据文本语义内容自由演绎。"
)
SYS_PROMPT_RAP = "请参考对话历史里的音色，用RAP方式将文本内容大声说唱出来。"
SYS_PROMPT_HUMMING = "请参考对话历史里的音色，用哼唱的方式将文本内容大声唱出来。"


class TextEncoder(Protocol):
    """Anything with ``encode(text) -> token ids`` (the Step1 sentencepiece tokenizer, without BOS)."""

    def encode(self, text: str) -> list[int]:
        """Encode text to token ids."""
        ...


@dataclass(frozen=True)
class Instruction:
    """Parsed leading tags of a TTS request."""

    tags: tuple[str, ...]
    text: str  # the text after the tags
    emotion: str | None = None
    language: str | None = None
    speed: str | None = None
    music: str | None = None  # "RAP" | "哼唱" | None


class InstructionError(ValueError):
    """Unknown or conflicting instruction tags (the message comes from :mod:`models.stepaudio.style`)."""


def parse_instructions(text: str) -> Instruction:
    """Parse chained leading ``(tag)`` / ``（tag）`` blocks with :func:`models.stepaudio.style.split_tags`.

    English aliases (``(happy1)``) map to the canonical Chinese tags. Raises :class:`InstructionError` (a
    ValueError) naming an unknown tag and listing the valid ones, or naming two tags of the same kind.
    """
    try:
        tags, rest = style.split_tags(text)
    except style.StyleError as e:
        raise InstructionError(f"unknown or conflicting instruction tags: {e}") from e
    return Instruction(
        tags=tuple(tags.tags),
        text=rest,
        emotion=tags.emotion or None,
        language=tags.language or None,
        speed=tags.speed or None,
        music=tags.music or None,
    )


def system_prompt(instruction: Instruction, speaker: str | None) -> str:
    """System prompt text: music prompts for RAP/哼唱, else with/without a named speaker."""
    if instruction.music == "哼唱":
        return SYS_PROMPT_HUMMING
    if instruction.music == "RAP":
        return SYS_PROMPT_RAP
    if speaker:
        return SYS_PROMPT_WITH_SPK.format(speaker=speaker)
    return SYS_PROMPT_WO_SPK


@dataclass(frozen=True)
class TTSPrompt:
    """Result of prompt building: the ids to feed Step1 and routing decisions for the rest of the chain."""

    input_ids: list[int]
    instruction: Instruction
    voice_key: str  # registry key of the voice whose mel/embedding condition the flow model
    flow_set: str  # "common" or "music": which CosyVoice-300M-25Hz weights synthesise


def _strip_prefix(encoder: TextEncoder, text: str) -> list[int]:
    """Encode ``text`` as it appears after a newline (tokenise "\\n"+text and drop the "\\n" tokens)."""
    prefix = encoder.encode("\n")
    full = encoder.encode("\n" + text)
    return full[len(prefix) :]


def build_prompt(
    encoder: TextEncoder,
    text: str,
    prompt_text: str,
    prompt_audio_ids: Sequence[int],
    speaker: str | None = None,
) -> list[int]:
    """Assemble TTS-3B input ids.

    ``prompt_audio_ids`` are LLM vocabulary ids (65536 + X) of the voice prompt's interleaved dual tokens;
    ``speaker`` names a registered voice (None / "" for cloning, which uses the speaker-less system prompt).
    """
    instruction = parse_instructions(text)
    sys_text = system_prompt(instruction, speaker)
    human = [BOS_ID, *encoder.encode("human\n")]  # the reference's encode() adds BOS to each role segment
    assistant = [BOS_ID, *encoder.encode("assistant\n")]
    ids = [BOS_ID, BOT_ID, BOS_ID, *encoder.encode(f"system\n{sys_text}"), EOT_ID]
    ids += [BOT_ID, *human, *_strip_prefix(encoder, prompt_text), EOT_ID]
    ids += [BOT_ID, *assistant, *[int(i) for i in prompt_audio_ids], EOT_ID]
    ids += [BOT_ID, *human, *_strip_prefix(encoder, text), EOT_ID]
    ids += [BOT_ID, *assistant]
    return ids


def plan_registered(encoder: TextEncoder, text: str, voice: str, registry: VoiceLookup) -> TTSPrompt:
    """Prompt for a registered voice; RAP/哼唱 switch to the voice's music variant ``{voice}{tag}``."""
    instruction = parse_instructions(text)
    key = voice
    if instruction.music:
        key = f"{voice}{instruction.music}"
        if key not in registry:
            raise ValueError(f"voice {voice!r} has no {instruction.music} variant (register {key!r})")
    elif voice not in registry:
        raise ValueError(f"unknown voice {voice!r}; registered: {', '.join(sorted(registry.names())) or 'none'}")
    entry = registry.get(key)
    ids = build_prompt(encoder, text, entry.prompt_text, entry.prompt_audio_ids, speaker=voice)
    return TTSPrompt(ids, instruction, key, "music" if instruction.music else "common")


def plan_clone(encoder: TextEncoder, text: str, prompt_text: str, prompt_audio_ids: Sequence[int]) -> TTSPrompt:
    """Prompt for voice cloning from a prompt wav (already tokenised) and its exact transcript."""
    if not prompt_text.strip():
        raise ValueError("cloning needs the exact transcript of the prompt audio (prompt_text is empty)")
    instruction = parse_instructions(text)
    ids = build_prompt(encoder, text, prompt_text, prompt_audio_ids, speaker=None)
    return TTSPrompt(ids, instruction, "", "music" if instruction.music else "common")


class VoiceEntryLike(Protocol):
    """What prompt building needs from a voice entry."""

    prompt_text: str
    prompt_audio_ids: list[int]


class VoiceLookup(Protocol):
    """What prompt building needs from a voice registry."""

    def __contains__(self, name: object) -> bool:
        """True if the voice is registered."""
        ...

    def get(self, name: str) -> VoiceEntryLike:
        """Return the entry."""
        ...

    def names(self) -> list[str]:
        """Registered voice names."""
        ...
