from concurrent.futures import ThreadPoolExecutor

import pytest

import harness


@pytest.fixture(scope="session")
def kafka():
    """The project's own single-node KRaft broker on 127.0.0.1 (left running for the next test run)."""
    harness.broker("start")
    return harness.BOOTSTRAP


@pytest.fixture
def worker_factory(kafka):
    started = []

    def make(**kwargs) -> harness.Worker:
        w = harness.Worker(**kwargs)
        started.append(w)
        return w

    yield make
    # All at once: each stop takes a second or two, and one by one every stop would rebalance the others.
    with ThreadPoolExecutor(max(1, len(started))) as pool:
        list(pool.map(harness.Worker.stop, started))
