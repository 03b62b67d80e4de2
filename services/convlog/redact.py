"""PII redaction for texts that go into conversation logs.

``redact(text) -> (redacted_text, kinds)`` replaces

- e-mail addresses with ``[EMAIL]``,
- payment-card numbers (13-19 digits starting 2-6, spaces/dashes allowed) that pass the Luhn check with ``[CARD]``,
- phone numbers, national or international (``+44 20 7946 0958``, ``0044 ...``, ``(415) 555-2671``,
  ``+86 138 0013 8000``; 7-15 digits, E.164 length) with ``[PHONE]``,

and returns the kinds found, in first-seen order, as strings (``"email"``, ``"card"``, ``"phone"``). Cards are
matched before phones so a card number is never reported as a phone; a 13-19 digit run that fails Luhn is not a
card and (above 15 digits) not a phone either, so it stays. ISO dates (``2025-03-14``) are not phones.

The patterns run on RE2 (``google-re2``): matching time is linear in the text, whatever it holds (the backtracking
engine took seconds on long runs of digits and separators). RE2 has no look-around, so each pattern captures the
character before the match (kept), and what must not follow a match is checked on the text after it.
"""

from __future__ import annotations

import re2

EMAIL = "email"
PHONE = "phone"
CARD = "card"
NO_CONSENT = "no_consent"

_EMAIL_RE = re2.compile(r"(^|[^\w.+-])([A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,})\b")
_CARD_RE = re2.compile(r"(^|[^\d+])([2-6](?:[ -]?\d){12,18})")  # issuer digit 2-6 (Visa, MC, Amex, ...)
_PHONE_RE = re2.compile(r"(^|[^\w+])((?:\+|00)?\(?\d[\d \t().-]{4,}\d)")
_DATE_RE = re2.compile(r"^\d{4}[-./]\d{1,2}[-./]\d{1,2}$|^\d{1,2}[-./]\d{1,2}[-./]\d{2,4}$")
_NON_DIGIT = re2.compile(r"\D")
_SEPARATOR = re2.compile(r"[+ ().-]")


def _followed_by(m: re2._Match, chars: str) -> bool:
    """Whether the text right after the match starts with a word character (``chars="w"``) or a digit."""
    rest = m.string[m.end():m.end() + 1]
    return bool(rest) and (rest.isdigit() if chars == "d" else (rest.isalnum() or rest == "_"))


def luhn_ok(digits: str) -> bool:
    """True when the digit string passes the Luhn checksum."""
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2 == 1:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


def redact(text: str) -> tuple[str, list[str]]:
    """Return ``text`` with e-mails, cards and phones replaced by placeholders, and the kinds replaced."""
    if not text:
        return text, []
    kinds: list[str] = []

    def note(kind: str) -> None:
        if kind not in kinds:
            kinds.append(kind)

    def email(m: re2._Match) -> str:
        note(EMAIL)
        return m.group(1) + "[EMAIL]"

    def card(m: re2._Match) -> str:
        digits = _NON_DIGIT.sub("", m.group(2))
        if not _followed_by(m, "d") and 13 <= len(digits) <= 19 and luhn_ok(digits):
            note(CARD)
            return m.group(1) + "[CARD]"
        return m.group(0)

    def phone(m: re2._Match) -> str:
        s = m.group(2)
        stripped = s.rstrip(" \t.-(")
        digits = _NON_DIGIT.sub("", stripped)
        if _followed_by(m, "w") or not 7 <= len(digits) <= 15 or _DATE_RE.match(stripped.strip()):
            return m.group(0)
        # plain numbers without any separator or "+" are amounts/ids unless long enough for a phone
        if not _SEPARATOR.search(stripped) and len(digits) < 9:
            return m.group(0)
        note(PHONE)
        return m.group(1) + "[PHONE]" + s[len(stripped) :]

    out = _EMAIL_RE.sub(email, text)
    out = _CARD_RE.sub(card, out)
    out = _PHONE_RE.sub(phone, out)
    return out, kinds
