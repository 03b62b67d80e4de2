"""Tenant rate quotas: a sliding minute, so a burst cannot be doubled across a minute boundary."""

from __future__ import annotations

import asyncio

import grpc
import pytest

from services.gateway import quotas as q
from services.kit.errors import StageError


def test_sliding_minute_counts_the_part_of_the_last_minute_still_covered() -> None:
    assert q.sliding_minute(0, 3, 10, 5) == (3, 0.0)
    used, wait = q.sliding_minute(6, 0, 30, 5)  # half of the last minute still counts: 3
    assert used == 3 and wait == 0.0
    used, wait = q.sliding_minute(10, 2, 15, 5)  # 10 * 0.75 + 2 = 9.5: back to 5 when 10 * w = 3, w = 0.3
    assert used == pytest.approx(9.5) and wait == pytest.approx((0.75 - 0.3) * 60)


def test_sliding_minute_wait_when_this_minute_alone_is_over() -> None:
    used, wait = q.sliding_minute(0, 8, 20, 4)
    # 40 s to the next minute, then 8 * (1 - t/60) <= 4 after another 30 s
    assert used == 8 and wait == pytest.approx(40 + 30)


@pytest.mark.parametrize("previous,current,into_s,limit",
                         [(10, 2, 15, 5), (0, 8, 20, 4), (7, 4.9, 50, 5), (3, 6, 0, 5)])
def test_sliding_minute_wait_is_exact(previous: float, current: float, into_s: float, limit: float) -> None:
    """Waiting the advised time is enough, and a second less is not (nothing more is sent meanwhile)."""
    used, wait = q.sliding_minute(previous, current, into_s, limit)
    assert used > limit and wait > 0

    def use_after(dt: float) -> float:
        t = into_s + dt
        if t < 60:
            return q.sliding_minute(previous, current, t, limit)[0]
        if t < 120:
            return q.sliding_minute(current, 0, t - 60, limit)[0]
        return 0.0

    assert use_after(wait) <= limit + 1e-9
    assert use_after(max(0.0, wait - 1.0)) > limit


def test_memory_quota_keeps_a_burst_across_the_minute_boundary(monkeypatch: pytest.MonkeyPatch) -> None:
    """A fixed window let a tenant send its quota at 0:59 and again at 1:00; the sliding minute refuses."""
    clock = [60.0 * 1000 + 59.0]
    monkeypatch.setattr(q.time, "time", lambda: clock[0])
    quotas = q.MemoryQuotas(0, 5, 0)

    async def main() -> list[str]:
        got = []
        for t in (59.0, 59.5, 60.0, 60.5, 61.0, 61.5, 62.0, 62.5):
            clock[0] = 60.0 * 1000 + t
            try:
                await quotas.request("acme")
                got.append("ok")
            except StageError as e:
                assert e.code == grpc.StatusCode.RESOURCE_EXHAUSTED and "5 requests per minute" in e.message
                assert e.retry_after_s is not None and 1.0 <= e.retry_after_s <= 60.0
                got.append("refused")
        await quotas.request("globex")  # another tenant has its own counters
        return got

    got = asyncio.run(main())
    assert got[:5] == ["ok"] * 5 and got[5:] == ["refused"] * 3, got
    # refused requests are not charged: the advised wait is when one request fits again, and it does then
    # (at 1:02.5 the last minute's 2 count for 57.5/60: one more fits once 2 * w + 3 + 1 <= 5, w = 0.5, at 1:30)
    clock[0] = 60.0 * 1001 + 2.5
    with pytest.raises(StageError) as info:
        asyncio.run(quotas.request("acme"))
    assert info.value.retry_after_s == pytest.approx(27.5)
    clock[0] = 60.0 * 1001 + 29.0
    with pytest.raises(StageError):
        asyncio.run(quotas.request("acme"))
    clock[0] = 60.0 * 1001 + 30.0
    asyncio.run(quotas.request("acme"))
