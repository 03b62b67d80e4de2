"""Redaction, consent, spool durability and preference rules (no broker needed)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
from logs_helpers import logger

from services.convlog.producer import read_spooled_events
from services.convlog.redact import luhn_ok, redact
from services.convlog.spool import Spool
from services.rlhf.rules import build_pairs, is_deaf_reply
from stepaudio.logs.v1 import logs_pb2


@pytest.mark.parametrize(
    "text, expected, kinds",
    [
        ("write to jane.doe+rl@mail.example.co.uk please", "write to [EMAIL] please", ["email"]),
        ("call +44 20 7946 0958 today", "call [PHONE] today", ["phone"]),
        ("my cell is +86 138 0013 8000.", "my cell is [PHONE].", ["phone"]),
        ("US: (415) 555-2671 or 415.555.2671", "US: [PHONE] or [PHONE]", ["phone"]),
        ("dial 0049 30 901820", "dial [PHONE]", ["phone"]),
        ("visa 4111 1111 1111 1111 exp 12/27", "visa [CARD] exp 12/27", ["card"]),
        ("amex 3782-822463-10005", "amex [CARD]", ["card"]),
        ("card 5500005555555559, mail a@b.io", "card [CARD], mail [EMAIL]", ["email", "card"]),
        ("not a card 4111 1111 1111 1112", "not a card 4111 1111 1111 1112", []),
        (
            "on 2025-03-14 at 10.30 I paid 1500 for order 12345",
            "on 2025-03-14 at 10.30 I paid 1500 for order 12345",
            [],
        ),
        ("", "", []),
    ],
)
def test_redaction(text, expected, kinds):
    out, found = redact(text)
    assert out == expected
    assert found == kinds


def test_luhn():
    assert luhn_ok("4111111111111111") and luhn_ok("79927398713")
    assert not luhn_ok("4111111111111112")


def _pcm(n: int = 1600) -> bytes:
    return bytes((i * 7) % 256 for i in range(n * 2))


def test_consent_controls_audio_and_transcript(tmp_path):
    log = logger(tmp_path)  # no bootstrap: the spool is the sink
    from services.convlog import AudioClip

    log.turn_recorded(
        session_id="s1",
        turn_id="t1",
        user_transcript="I am bob, bob@x.org",
        transcript_confidence=0.9,
        reply_text="Hi bob, I'll mail bob@x.org",
        user_audio=AudioClip(_pcm(), 16000),
        reply_audio=AudioClip(_pcm(800), 16000),
        consent=False,
    )
    log.turn_recorded(
        session_id="s2",
        turn_id="t1",
        user_transcript="call me on +1 415 555 2671",
        transcript_confidence=0.9,
        reply_text="ok",
        user_audio=AudioClip(_pcm(), 16000),
        consent=True,
    )
    log.feedback(session_id="s1", turn_id="t1", rating=1, comment="bad, see bob@x.org", consent=False)
    assert log.flush(10)
    events = {(e.session_id, e.WhichOneof("payload")): e for e in read_spooled_events(log.spool)}
    log.close()

    no = events[("s1", "turn_recorded")]
    assert no.consent is False
    assert no.turn_recorded.user_transcript == "[REDACTED]"
    assert not no.turn_recorded.HasField("user_audio") and not no.turn_recorded.HasField("reply_audio")
    assert no.turn_recorded.reply_text == "Hi bob, I'll mail [EMAIL]"
    assert set(no.redactions) == {logs_pb2.REDACTION_KIND_NO_CONSENT, logs_pb2.REDACTION_KIND_EMAIL}
    assert events[("s1", "feedback_given")].feedback_given.comment == "[REDACTED]"

    yes = events[("s2", "turn_recorded")]
    assert yes.turn_recorded.user_transcript == "call me on [PHONE]"
    assert list(yes.redactions) == [logs_pb2.REDACTION_KIND_PHONE]
    ref = yes.turn_recorded.user_audio
    path = Path(ref.uri.removeprefix("file://"))
    assert path.is_file() and hashlib.sha256(path.read_bytes()).hexdigest() == ref.sha256
    assert ref.sample_rate_hz == 16000 and ref.duration_ms == 100
    wavs = list((tmp_path / "audio").rglob("*.wav"))
    assert wavs == [path]  # the unconsented audio was never written


def test_spool_survives_restart_and_torn_write(tmp_path):
    sp = Spool(tmp_path, fsync_policy="always", segment_bytes=4096)
    assert all(sp.append_many([f"rec{i}".encode() * 20 for i in range(100)]))
    recs = sp.read(sp.acked_position(), 30)
    sp.ack(recs[-1][1], 30)
    sp.close()
    seg = max(p for p in tmp_path.iterdir() if p.suffix == ".seg")
    with open(seg, "ab") as f:  # a crash in the middle of a record
        f.write(b"\x00\x00\x00\x50\x12\x34")
    sp = Spool(tmp_path)
    assert sp.pending == 70
    payloads = [p for p, _pos, _seg in sp.read(sp.acked_position(), 1000)]
    assert payloads[0] == b"rec30" * 20 and payloads[-1] == b"rec99" * 20 and len(payloads) == 70
    assert sp.append(b"after restart")
    assert sp.read(sp.acked_position(), 1000)[-1][0] == b"after restart"
    sp.close()


def test_spool_deletes_only_acknowledged_segments(tmp_path):
    sp = Spool(tmp_path, segment_bytes=4096, fsync_policy="none")
    sp.append_many([os.urandom(500) for _ in range(40)])
    segs = len(list(tmp_path.glob("*.seg")))
    recs = sp.read(sp.acked_position(), 20)
    sp.ack(recs[-1][1], 20)
    assert 1 < len(list(tmp_path.glob("*.seg"))) < segs
    recs = sp.read(sp.acked_position(), 1000)
    sp.ack(recs[-1][1], len(recs))
    assert sp.pending == 0 and len(list(tmp_path.glob("*.seg"))) == 1


def test_spool_full_policies(tmp_path):
    sp = Spool(tmp_path / "a", max_bytes=1 << 16, segment_bytes=8192, full_policy="drop_newest")
    ok = sp.append_many([b"x" * 1000 for _ in range(100)])
    assert 0 < sum(ok) < 100 and ok[-1] is False and sp.total_bytes() <= 1 << 16
    first = sp.read(sp.acked_position(), 1)[0][0]
    assert first == b"x" * 1000  # nothing already spooled was lost
    sp2 = Spool(tmp_path / "b", max_bytes=1 << 16, segment_bytes=8192, full_policy="drop_oldest")
    ok = sp2.append_many([i.to_bytes(4, "big") * 250 for i in range(100)])
    assert all(ok) and sp2.total_bytes() <= 1 << 16
    assert sp2.read(sp2.acked_position(), 1000)[-1][0] == (99).to_bytes(4, "big") * 250


def _ev(kind: str, eid: str, t: int, **fields) -> logs_pb2.ConversationEvent:
    ev = logs_pb2.ConversationEvent(event_id=eid, session_id="s", turn_id="t", schema_version=1, consent=True)
    ev.occurred_at.FromSeconds(t)
    getattr(ev, kind).CopyFrom(
        getattr(
            logs_pb2,
            {
                "turn_recorded": "TurnRecorded",
                "feedback_given": "FeedbackGiven",
                "reply_regenerated": "ReplyRegenerated",
            }[kind],
        )(**fields)
    )
    return ev


def test_rules_deaf_hacking_rating_regenerate():
    assert is_deaf_reply("Sorry, I didn't quite hear you.") and is_deaf_reply("抱歉，我没听清")
    assert not is_deaf_reply("I heard that Paris is the capital.")

    turn = _ev(
        "turn_recorded",
        "e1",
        1,
        user_transcript="what's the weather",
        transcript_confidence=0.95,
        reply_text="Sorry, I couldn't hear you, could you repeat?",
    )
    regen = _ev("reply_regenerated", "e2", 2, target_turn_id="t", alternative_index=1, reply_text="Sunny, 21C.")
    up = _ev("feedback_given", "e3", 3, target_turn_id="t", rating=5, target_alternative_index=0)  # liked the dodge
    pairs = build_pairs([up, regen, turn])
    assert [(p.reason, p.chosen.alternative_index, p.rejected.alternative_index) for p in pairs] == [
        ("deaf_hacking", 1, 0)
    ]

    unclear = _ev(
        "turn_recorded",
        "e1",
        1,
        user_transcript="wha",
        transcript_confidence=0.3,
        reply_text="Sorry, I didn't catch that.",
    )
    assert build_pairs([unclear]) == []  # asking again is right when the audio was unclear

    t2 = _ev("turn_recorded", "e1", 1, user_transcript="tell a joke", transcript_confidence=0.9, reply_text="meh")
    regen_req = _ev("feedback_given", "e4", 2, target_turn_id="t", regenerate_requested=True)
    alt = _ev("reply_regenerated", "e5", 3, target_turn_id="t", alternative_index=1, reply_text="a good joke")
    (p,) = build_pairs([t2, regen_req, alt])
    assert (p.reason, p.chosen.text, p.rejected.text) == ("regenerate", "a good joke", "meh")
    down = _ev("feedback_given", "e6", 4, target_turn_id="t", thumbs=logs_pb2.THUMBS_DOWN, target_alternative_index=1)
    up0 = _ev("feedback_given", "e7", 5, target_turn_id="t", thumbs=logs_pb2.THUMBS_UP)
    (p,) = build_pairs([t2, regen_req, alt, down, up0])
    assert (p.reason, p.chosen.text, p.rejected.text, p.chosen.score) == ("thumbs", "meh", "a good joke", 5.0)
    assert sorted(p.source_event_ids) == ["e1", "e4", "e5", "e6", "e7"]


@pytest.mark.timeout(20)
@pytest.mark.parametrize("text", [
    "1 " * 50_000 + "x",  # digits and separators that never end a phone: the backtracking engine took minutes
    "a" * 100_000 + "@",  # an e-mail prefix that never gets its domain
    "4-" * 50_000,
    ("+" + "(1) " * 20_000) * 2,
])
def test_redaction_is_linear_on_adversarial_text(text: str) -> None:
    out, _ = redact(text)
    assert len(out) <= len(text) + 16


def test_an_oversized_event_is_cut_to_fit(tmp_path) -> None:
    from services.convlog import ConversationLogger, ConvlogSettings
    from services.convlog.producer import read_spooled_events

    log = ConversationLogger(ConvlogSettings(spool_dir=tmp_path / "spool", audio_dir=tmp_path / "audio",
                                             bootstrap_servers="", max_event_bytes=8192)).start()
    try:
        log.turn_recorded(session_id="s", turn_id="t", user_transcript="hi", reply_text="word " * 100_000,
                          consent=True)
        assert log.flush(10)
        [ev] = read_spooled_events(log.spool)
    finally:
        log.close()
    assert ev.ByteSize() <= 8192
    assert ev.turn_recorded.reply_text.endswith("[cut]") and ev.turn_recorded.user_transcript == "hi"


def test_a_record_kafka_refuses_for_good_is_skipped_not_retried_forever(tmp_path) -> None:
    from kafka.errors import MessageSizeTooLargeError

    from services.convlog import ConversationLogger, ConvlogSettings

    sent: list[bytes] = []

    class Future:
        def __init__(self, error: BaseException | None) -> None:
            self.error = error

        def add_callback(self, fn, *args):
            if self.error is None:
                fn(*args, None)
            return self

        def add_errback(self, fn, *args):
            if self.error is not None:
                fn(*args, self.error)
            return self

    class Producer:
        def __init__(self, **_kw) -> None:
            pass

        def send(self, topic, key, value, headers):
            if b"refuse-sync" in value:
                raise MessageSizeTooLargeError("over max_request_size")
            if b"refuse-async" in value:
                return Future(MessageSizeTooLargeError("broker: message too large"))
            sent.append(value)
            return Future(None)

        def close(self, timeout=None) -> None:
            pass

    log = ConversationLogger(ConvlogSettings(spool_dir=tmp_path / "spool", audio_dir=tmp_path / "audio",
                                             bootstrap_servers="broker:9092"), producer_factory=Producer).start()
    try:
        for text in ("first", "refuse-sync", "refuse-async", "last"):
            log.turn_recorded(session_id="s", turn_id=text, user_transcript=text, reply_text=text, consent=True)
        assert log.flush(10), log.stats()
    finally:
        log.close()
    assert [v for v in sent if b"first" in v] and [v for v in sent if b"last" in v]
    assert log.send_errors == 0  # the refused records did not reset the producer


def test_connectivity_and_lag_metrics_tell_the_truth_when_kafka_acknowledges_nothing(tmp_path) -> None:
    import time

    from prometheus_client import REGISTRY

    from services.convlog import ConversationLogger, ConvlogSettings

    class Silent:  # a broker that takes sends and never acknowledges (unreachable behind a buffer)
        def add_callback(self, *a):
            return self

        def add_errback(self, *a):
            return self

    class Producer:
        def __init__(self, **_kw) -> None:
            pass

        def send(self, *a, **kw):
            return Silent()

        def close(self, timeout=None) -> None:
            pass

    log = ConversationLogger(ConvlogSettings(spool_dir=tmp_path / "spool", audio_dir=tmp_path / "audio",
                                             bootstrap_servers="broker:9092", request_timeout_ms=1000),
                             producer_factory=Producer).start()
    try:
        log.session_ended(session_id="s", turn_count=0)
        deadline = time.monotonic() + 20
        while REGISTRY.get_sample_value("stepaudio_convlog_kafka_connected") != 0.0 or (
                REGISTRY.get_sample_value("stepaudio_convlog_delivery_lag_seconds") or 0) < 1.0:
            assert time.monotonic() < deadline, "connectivity never dropped to 0"
            time.sleep(0.1)
    finally:
        log._stop.set()
        log.close(timeout_s=1)


def test_audio_references_resolve_outside_the_pod(tmp_path) -> None:
    import numpy as np

    from services.convlog import LocalAudioStore

    local = LocalAudioStore(tmp_path / "a")
    shared = LocalAudioStore(tmp_path / "a", base_uri="s3://voice-logs/audio/")
    pcm = (np.sin(np.arange(1600) / 5) * 0.3).astype(np.float32)
    ref = shared.put(pcm, 16000)
    assert ref.uri == f"s3://voice-logs/audio/{ref.sha256[:2]}/{ref.sha256}.wav"
    assert local.put(pcm, 16000).uri.startswith("file://") and ref.duration_ms == 100
    assert local.get(ref)[:4] == b"RIFF"  # the same key in the directory the bucket is synced from


def test_barge_in_is_a_weak_negative_signal() -> None:
    cut = logs_pb2.TurnRecorded(user_transcript="tell me about rome", transcript_confidence=0.9,
                                reply_text="Rome is a city that")
    cut.interruption.audio_offset_ms = 900
    turn = _ev("turn_recorded", "e1", 1, **{f.name: v for f, v in cut.ListFields()})
    alt = _ev("reply_regenerated", "e2", 2, target_turn_id="t", alternative_index=1,
              reply_text="Rome is Italy's capital.")
    (p,) = build_pairs([turn, alt])
    assert p.reason == "barge_in" and p.chosen.alternative_index == 1 and p.rejected.text == "Rome is a city that"
    assert build_pairs([turn]) == []  # an interruption alone makes no pair
    low = _ev("feedback_given", "e3", 3, target_turn_id="t", target_alternative_index=1, rating=2)
    assert build_pairs([turn, alt, low]) == []  # the alternative scored 2: no preference
    up = _ev("feedback_given", "e4", 3, target_turn_id="t", target_alternative_index=0, thumbs=logs_pb2.THUMBS_UP)
    assert build_pairs([turn, alt, up]) == []  # the user liked the interrupted reply: the weak signal yields


def test_a_full_disk_holds_the_events_and_writes_them_when_it_has_room(tmp_path) -> None:
    import errno
    import time

    from services.convlog import ConversationLogger, ConvlogSettings
    from services.convlog.producer import read_spooled_events

    log = ConversationLogger(ConvlogSettings(spool_dir=tmp_path / "spool", audio_dir=tmp_path / "audio",
                                             bootstrap_servers="")).start()
    assert log.spool is not None
    real = log.spool.append_many
    failures = {"left": 6}

    def full_disk(payloads):
        if failures["left"] > 0:
            failures["left"] -= 1
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(payloads)

    log.spool.append_many = full_disk  # type: ignore[method-assign]
    try:
        ids = [log.feedback(session_id="s", turn_id=f"t{i}", rating=3) for i in range(20)]
        time.sleep(0.3)
        ids += [log.feedback(session_id="s", turn_id=f"u{i}", rating=4) for i in range(20)]
        assert log.flush(30), log.stats()
        spooled = [e.event_id for e in read_spooled_events(log.spool)]
    finally:
        log.close()
    assert failures["left"] == 0
    assert sorted(spooled) == sorted(ids)  # every accepted event, none lost, none twice


def test_assignment_watch_rejoins_a_member_left_without_partitions() -> None:
    from services.rlhf.collector import AssignmentWatch

    w = AssignmentWatch(first_s=15, max_s=60)
    assert not w.due(False, 0)  # the clock starts at the first poll without partitions
    assert not w.due(False, 14.9)
    assert w.due(False, 15)  # rejoin
    assert not w.due(False, 44.9) and w.due(False, 45)  # then twice as long: 30 s
    assert not w.due(False, 104.9) and w.due(False, 105)  # 60 s (the cap)
    assert not w.due(False, 164.9) and w.due(False, 165)  # still 60 s
    assert not w.due(True, 170)  # partitions again: back to the first wait
    assert not w.due(False, 171) and not w.due(False, 185.9) and w.due(False, 186)
