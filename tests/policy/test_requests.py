"""The account's non-create request budget, fleet-wide in a real Redis
(dialer.policy.requests), and the carrier client spending from it against the simulator."""

from __future__ import annotations

import threading
import time

import pytest
import redis

from dialer.carrier.client import CatapultClient
from dialer.carrier.errors import Action, CarrierError
from dialer.dev.fleet import RedisServer
from dialer.dev.simulator import SimConfig, Simulator
from dialer.policy import pacing
from dialer.policy.requests import CONTROL, READ, RequestBudget, RequestsBusy


@pytest.fixture
def pacer(redis_server: RedisServer) -> pacing.RedisBackend:
    client = redis.Redis(port=redis_server.port, db=5)
    client.flushdb()
    return pacing.RedisBackend(client)


def test_requests_across_processes_keep_to_the_rate(pacer: pacing.RedisBackend) -> None:
    # Two "workers" (budgets over the same Redis) sharing 10 requests a second.
    budgets = [RequestBudget(lambda: pacer, 10), RequestBudget(lambda: pacer, 10)]
    times: list[float] = []
    lock = threading.Lock()

    def run(budget: RequestBudget) -> None:
        for _ in range(10):
            budget.take(CONTROL)
            with lock:
                times.append(time.monotonic())

    threads = [threading.Thread(target=run, args=(b,)) for b in budgets]
    started = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    times.sort()
    # 20 requests at 10/s (paced 1% under): the last goes out about 1.9 s after the first.
    assert times[-1] - started == pytest.approx(19 / (10 * pacing.PACE_MARGIN), abs=0.25)
    gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
    assert min(gaps) > 0.07


def test_reads_give_way_to_call_control(pacer: pacing.RedisBackend) -> None:
    budget = RequestBudget(lambda: pacer, 1)
    budget.take(CONTROL)  # control marked itself waiting for the next two seconds
    with pytest.raises(RequestsBusy, match="call control is waiting"):
        budget.take(READ)
    pacer._client.delete("dialer:flag:requests-control-waiting")
    # With no control waiting, a read takes the next slot, up to READ_WAIT away.
    assert budget.take(READ) == pytest.approx(1 / pacing.PACE_MARGIN, abs=0.2)


def test_a_429_holds_every_non_create_request_until_its_reset(pacer) -> None:
    budget = RequestBudget(lambda: pacer, 100)
    budget.pushed_back(time.time() + 5)
    with pytest.raises(RequestsBusy, match="no slot"):
        budget.take(READ)


def test_the_client_spends_from_the_budget_and_honours_the_carriers_429(pacer) -> None:
    sim = Simulator(SimConfig(request_rate=1.0))
    url = sim.start()
    try:
        unpaced = CatapultClient(url, "u-sim", "sim-token", "sim-secret")
        paced = CatapultClient(
            url, "u-sim", "sim-token", "sim-secret", budget=RequestBudget(lambda: pacer, 1)
        )
        # Unpaced, the second read in the same second is the carrier's 429.
        with pytest.raises(CarrierError) as first:
            unpaced.get_call("c-none")
        assert first.value.status in (404, 429)
        with pytest.raises(CarrierError) as refused:
            for _ in range(3):
                unpaced.get_call("c-none")
        assert refused.value.status == 429 and refused.value.action is Action.RATE_LIMITED
        # Paced: the client itself waits for its slots, and the carrier never says 429.
        time.sleep(1.2)
        statuses = []
        for _ in range(3):
            try:
                paced.get_call("c-none")
            except CarrierError as exc:
                statuses.append(exc.status)
        assert statuses == [404, 404, 404]
    finally:
        sim.stop()
