"""Table tests of the turn detector: VAD updates in, decisions out (pure; no loop, no clock)."""

from __future__ import annotations

import dataclasses

import pytest

from services.gateway.turns import (
    BargeIn,
    EndOfTurnModel,
    Endpoint,
    HoldReply,
    ResumeReply,
    State,
    TurnDetector,
    TurnParams,
    UserPaused,
    UserResumed,
    UserStarted,
    VadUpdate,
)
from services.vad.hysteresis import Hysteresis

PARAMS = TurnParams(hysteresis=Hysteresis(0.5, 0.35), min_speech_ms=100, pause_ms=200, endpoint_ms=500,
                    prefix_padding_ms=300, min_interruption_ms=300, noise_hold_ms=150, speculative=True)
FRAME = 32.0


def run(script: list[tuple], playing: bool = False, start: State = State.SILENCE) -> tuple[list, TurnDetector]:
    """Script rows: ("voice", ms) a voiced frame, ("start", ms) / ("stop", ms) VAD events, ("at", ms) progress."""
    det = TurnDetector(PARAMS)
    det.state = start
    out: list = []
    for row in script:
        kind, ms = row
        if kind == "voice":
            u = VadUpdate(voiced_ms=[ms], events=[], processed_ms=ms + FRAME, frame_ms=FRAME)
        elif kind in ("start", "stop"):
            u = VadUpdate(voiced_ms=[], events=[(kind == "start", ms)], processed_ms=ms, frame_ms=FRAME)
        else:
            u = VadUpdate(voiced_ms=[], events=[], processed_ms=ms, frame_ms=FRAME)
        out += det.on_vad(u, playing)
    return out, det


CASES = {
    "utterance, then the endpoint after endpoint_ms of silence": (
        [("start", 500), ("voice", 1400), ("stop", 1500), ("at", 1900), ("at", 2000)], False, State.SILENCE,
        [UserStarted(500), UserPaused(1500), Endpoint(1500)]),
    "hesitation: resumed before the endpoint, one endpoint at the end": (
        [("start", 500), ("stop", 1000), ("at", 1300), ("start", 1350), ("stop", 2000), ("at", 2500)], False,
        State.SILENCE, [UserStarted(500), UserPaused(1000), UserResumed(1350), UserPaused(2000), Endpoint(2000)]),
    "a voiced frame VAD has not confirmed delays the endpoint": (
        [("start", 500), ("stop", 1000), ("voice", 1400), ("at", 1500), ("at", 1900), ("at", 1932)], False,
        State.SILENCE, [UserStarted(500), UserPaused(1000), Endpoint(1000)]),
    "barge-in: held at the first frame, cancelled after min_interruption_ms": (
        [("voice", 100), ("start", 100), ("at", 300), ("at", 400)], True, State.BOT_REPLYING,
        [HoldReply(100), HoldReply(100), UserStarted(100), BargeIn(100)]),
    "false interruption: speech shorter than min_interruption_ms plays on": (
        [("voice", 100), ("start", 100), ("stop", 250), ("at", 300)], True, State.BOT_REPLYING,
        [HoldReply(100), HoldReply(100), UserStarted(100), ResumeReply("false_interruption")]),
    "barge-in whose pause comes within a frame of min_interruption_ms: still a barge-in, the hold ends": (
        [("voice", 100), ("start", 100), ("at", 380), ("stop", 420), ("at", 950)], True, State.BOT_REPLYING,
        [HoldReply(100), HoldReply(100), UserStarted(100), BargeIn(100), UserPaused(420), Endpoint(420)]),
    "noise: a frame that never becomes speech releases the hold": (
        [("voice", 100), ("at", 300), ("at", 400)], True, State.BOT_REPLYING,
        [HoldReply(100), ResumeReply("noise")]),
    "no reply playing: voiced frames hold nothing": (
        [("voice", 100), ("at", 400)], False, State.SILENCE, []),
    "a reply started by text (state SILENCE) is held too": (
        [("voice", 100)], True, State.SILENCE, [HoldReply(100)]),
}


@pytest.mark.parametrize("name", list(CASES))
def test_turn_decisions(name: str) -> None:
    script, playing, start, want = CASES[name]
    got, _ = run(script, playing, start)
    assert got == want


def test_false_interruption_leaves_the_floor_to_the_bot() -> None:
    _, det = run([("voice", 100), ("start", 100), ("stop", 250)], True, State.BOT_REPLYING)
    assert det.state == State.BOT_REPLYING
    det.replies_done()
    assert det.state == State.SILENCE


def test_end_of_input_ends_the_turn_where_speech_stopped() -> None:
    _, det = run([("start", 500), ("stop", 1500)])
    assert det.end_of_input(1600) == [Endpoint(1500)]
    _, det = run([("start", 500)])
    assert det.end_of_input(1600) == [Endpoint(1600)]
    _, det = run([])
    assert det.end_of_input(1600) == []


def _eot_detector(verdict: float | None) -> tuple[TurnDetector, EndOfTurnModel]:
    params = dataclasses.replace(PARAMS, policy="end_of_turn_model", end_of_turn_max_wait_ms=1500)
    det = TurnDetector(params)
    assert isinstance(det.policy, EndOfTurnModel)
    return det, det.policy


@pytest.mark.parametrize(("asked", "verdict", "endpoint_at"), [
    (False, None, 1500 + 500),  # never asked about (no model): the silence timer (endpoint_ms 500)
    (True, None, 1500 + 500),  # judged without an answer (a failed model): the timer
    (True, 0.9, 1500 + 32),  # complete: the first update after the verdict ends the turn
    (True, 0.0, 1500 + 1500),  # surely incomplete: waits max_wait_ms (a hesitation, a list, a number)
    (True, 0.25, 1500 + 1000),  # half the threshold: halfway between endpoint_ms and max_wait_ms
    (True, 0.49, 1500 + 520),  # just under the threshold: about the silence timer
    (True, "pending", 1500 + 1500),  # still being computed: waits for it, at most max_wait_ms
])
def test_end_of_turn_model_policy(asked: bool, verdict: float | str | None, endpoint_at: float) -> None:
    det, policy = _eot_detector(None)
    det.on_vad(VadUpdate([], [(True, 500)], 500, FRAME), False)
    assert det.on_vad(VadUpdate([], [(False, 1500)], 1500, FRAME), False) == [UserPaused(1500)]
    if asked:
        policy.asked(1500)
    if asked and verdict != "pending":
        assert not isinstance(verdict, str)
        policy.judge(1500, verdict)
    ends = [ms for ms in range(1532, 3500, 32) if det.on_vad(VadUpdate([], [], ms, FRAME), False)]
    assert ends and endpoint_at <= ends[0] < endpoint_at + 32, ends


def test_end_of_input_settles_a_held_reply() -> None:
    _, det = run([("voice", 100), ("start", 100)], playing=True, start=State.BOT_REPLYING)
    assert det.end_of_input(600) == [BargeIn(100), Endpoint(600)]  # 500 ms of speech over the reply
    _, det = run([("voice", 100), ("start", 100)], playing=True, start=State.BOT_REPLYING)
    assert det.end_of_input(200) == [ResumeReply("false_interruption"), Endpoint(200)]
    _, det = run([("voice", 100)], playing=True, start=State.BOT_REPLYING)
    assert det.end_of_input(150) == [ResumeReply("noise")]
    assert not det.holding


def test_end_of_turn_verdict_belongs_to_its_pause() -> None:
    det, policy = _eot_detector(None)
    det.on_vad(VadUpdate([], [(True, 500)], 500, FRAME), False)
    det.on_vad(VadUpdate([], [(False, 1000)], 1000, FRAME), False)
    policy.judge(1000, 0.95)
    # a voiced frame after the pause (a resumption VAD has not confirmed): a "complete" must not cut it off
    det.on_vad(VadUpdate([1100], [], 1132, FRAME), False)
    assert det.on_vad(VadUpdate([], [], 1400, FRAME), False) == []
    assert det.on_vad(VadUpdate([], [], 1700, FRAME), False) == [Endpoint(1000)]  # the timer after the frame
    # a verdict for an older pause does not end a newer one
    det2, policy2 = _eot_detector(None)
    det2.on_vad(VadUpdate([], [(True, 500)], 500, FRAME), False)
    det2.on_vad(VadUpdate([], [(False, 2000)], 2000, FRAME), False)
    policy2.judge(1000, 0.99)
    assert det2.on_vad(VadUpdate([], [], 2100, FRAME), False) == []


def test_a_stale_verdict_does_not_replace_a_newer_one() -> None:
    det, policy = _eot_detector(None)
    policy.judge(2000, 0.95)
    policy.judge(1000, 0.05)  # the verdict of an earlier pause arrives late
    assert policy.verdicts == {2000: 0.95}


def test_pause_verdict_text_only_says_not_finished() -> None:
    from services.gateway.turns import pause_verdict

    assert pause_verdict(0.2, 0.0, 0.03, 0.5) == 0.0  # both hear an unfinished turn: the longest wait
    assert pause_verdict(0.95, 0.0, 0.03, 0.5) == 0.25  # they disagree: halfway
    assert pause_verdict(0.95, 0.3, 0.03, 0.5) == 0.95  # otherwise the audio model decides
    assert pause_verdict(0.2, 0.9, 0.03, 0.5) == 0.2  # the text never says "finished" on its own
    assert pause_verdict(0.95, None, 0.03, 0.5) == 0.95  # no text verdict (no model, no speculative reply)
    assert pause_verdict(None, 0.9, 0.03, 0.5) is None  # no audio verdict: the silence timer decides
    assert pause_verdict(None, 0.0, 0.03, 0.5) == 0.0
