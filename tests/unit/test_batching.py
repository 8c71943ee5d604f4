"""Batching without corking, on BentoML's own batcher: a lone request after a burst of load is
dispatched at once instead of waiting as long as the burst's requests queued."""

from __future__ import annotations

import asyncio
import time

from bentoml._internal.marshal.dispatcher import CorkDispatcher, Optimizer

from serving.batching import dispatch_without_corking

LEARNED_WAIT_S = 0.5  # what a burst of load teaches BentoML's optimizer (exaggerated)


def _learn_a_long_wait(optimizer: Optimizer) -> None:
    for _ in range(Optimizer.N_KEPT_SAMPLE):
        optimizer.log_outbound(n=4, wait=LEARNED_WAIT_S, duration=0.002)
    optimizer.trigger_refresh()


async def _lone_request_delay(dispatcher: CorkDispatcher) -> float:
    """Seconds from a lone request's arrival to its batch's call, after the optimizer learned a
    long wait."""
    called_at: dict[int, float] = {}

    async def score(batch):
        for item in batch:
            called_at[item] = time.perf_counter()
        return list(batch)

    call = dispatcher(score)
    for i in range(20):  # through BentoML's own training of the optimizer, one at a time
        await call(i)
    _learn_a_long_wait(dispatcher.optimizer)
    sent = time.perf_counter()
    assert await call(99) == 99
    dispatcher.shutdown()
    return called_at[99] - sent


def _dispatcher() -> CorkDispatcher:
    return CorkDispatcher(5_000, 100, fallback=lambda: None, get_batch_size=lambda _: 1)


def test_bentoml_alone_holds_a_lone_request_back_after_load(monkeypatch):
    """The behaviour this module changes (if a BentoML upgrade changes it, this says so)."""
    original = getattr(Optimizer.trigger_refresh, "__wrapped__", Optimizer.trigger_refresh)
    monkeypatch.setattr(Optimizer, "trigger_refresh", original)
    optimizer = Optimizer(5.0)
    _learn_a_long_wait(optimizer)
    assert optimizer.wait == LEARNED_WAIT_S
    assert asyncio.run(_lone_request_delay(_dispatcher())) > LEARNED_WAIT_S / 2


def test_a_lone_request_goes_at_once_and_load_still_batches():
    dispatch_without_corking()
    dispatch_without_corking()  # twice is once
    optimizer = Optimizer(5.0)
    _learn_a_long_wait(optimizer)
    assert optimizer.wait == 0
    # the unchanged batcher would hold it back ~0.95 x 0.5 s
    assert asyncio.run(_lone_request_delay(_dispatcher())) < LEARNED_WAIT_S / 5

    async def burst() -> list[int]:
        sizes: list[int] = []
        d = _dispatcher()

        async def slow_score(batch):
            sizes.append(len(batch))
            await asyncio.sleep(0.05)
            return list(batch)

        call = d(slow_score)
        for i in range(20):  # BentoML's training
            await call(i)
        sizes.clear()
        await asyncio.gather(*(call(i) for i in range(30)))
        d.shutdown()
        return sizes

    sizes = asyncio.run(burst())
    assert sum(sizes) == 30 and max(sizes) > 1  # what queued behind a busy batch went together
