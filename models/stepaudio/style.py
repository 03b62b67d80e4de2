"""Step-Audio-TTS-3B instruction tags: ``(高兴1)(粤语)(快速1)`` or ASCII aliases ``(happy1)(cantonese)(fast1)``.

Tags sit in parentheses (ASCII or full-width), possibly chained, before the text or in the ``style`` field. The
canonical form is the Chinese tag the model was trained with; English aliases map onto it. Unknown tags are
a :class:`StyleError` (a ValueError; services answer INVALID_ARGUMENT) with the list of valid ones. Torch-free:
every profile uses this one parser.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

EMOTIONS = {"高兴1": "happy1", "高兴2": "happy2", "生气1": "angry1", "生气2": "angry2", "悲伤1": "sad1",
            "撒娇1": "coquettish1"}
LANGUAGES = {"中文": "chinese", "英文": "english", "韩语": "korean", "日语": "japanese", "四川话": "sichuanese",
             "粤语": "cantonese", "广东话": "cantonese2"}
SPEEDS = {"慢速1": ("slow1", 0.85), "慢速2": ("slow2", 0.7), "快速1": ("fast1", 1.15), "快速2": ("fast2", 1.3)}
MUSIC = {"RAP": "rap", "哼唱": "humming"}

_ALIASES: dict[str, str] = {}
for _table in (EMOTIONS, LANGUAGES, MUSIC):
    for _zh, _en in _table.items():
        _ALIASES[_zh.lower()] = _zh
        _ALIASES[_en] = _zh
for _zh, (_en, _f) in SPEEDS.items():
    _ALIASES[_zh] = _zh
    _ALIASES[_en] = _zh
_ALIASES["cantonese2"] = "广东话"

class StyleError(ValueError):
    """An unknown, conflicting or unparsable style tag; the message says what to fix."""


_TAG = re.compile(r"^\s*[(（]([^()（）]*)[)）]")


@dataclass
class StyleTags:
    """Parsed tags (canonical Chinese names)."""

    emotion: str = ""
    language: str = ""
    speed: str = ""
    music: str = ""
    tags: list[str] = field(default_factory=list)

    @property
    def speed_factor(self) -> float:
        return SPEEDS[self.speed][1] if self.speed else 1.0

    def prefix(self) -> str:
        """The tags in the model's canonical prompt form, e.g. ``(高兴1)(粤语)``."""
        return "".join(f"({t})" for t in self.tags)


def valid_tags() -> list[str]:
    return sorted(set(_ALIASES.values())) + sorted(k for k in _ALIASES if k.isascii())


def split_tags(text: str) -> tuple[StyleTags, str]:
    """Parse leading tags of ``text``; return them and the remaining text."""
    tags = StyleTags()
    rest = text
    while (m := _TAG.match(rest)) is not None:
        raw = m.group(1).strip()
        canon = _ALIASES.get(raw) or _ALIASES.get(raw.lower())
        if canon is None:
            raise StyleError(f"unknown style tag ({raw}); valid tags: {', '.join(valid_tags())}")
        slot = ("emotion" if canon in EMOTIONS else "language" if canon in LANGUAGES else
                "speed" if canon in SPEEDS else "music")
        if getattr(tags, slot):
            raise StyleError(f"two {slot} tags ({getattr(tags, slot)}) and ({canon}): keep one")
        setattr(tags, slot, canon)
        tags.tags.append(canon)
        rest = rest[m.end():]
    return tags, rest.lstrip()


def parse_style(style: str) -> StyleTags:
    """Parse a ``style`` field that holds only tags."""
    tags, rest = split_tags(style or "")
    if rest.strip():
        raise StyleError(f"style must be parenthesised tags like (happy1)(fast1); cannot parse {rest!r}")
    return tags
