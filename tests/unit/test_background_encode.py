"""agent/frame_codec.py, Background: frame encodes beside the caller, with the work in flight bounded."""

from __future__ import annotations

import functools
import threading

import pytest

from agent.frame_codec import Background, background


def test_jobs_run_and_their_results_and_errors_come_back() -> None:
    pool = Background(threads=2, limit=3)
    assert [pool.submit(functools.partial(pow, k, 2)).result() for k in range(5)] == [0, 1, 4, 9, 16]

    def fail() -> int:
        raise ValueError("no")

    with pytest.raises(ValueError, match="no"):
        pool.submit(fail).result()
    assert pool.submit(lambda: 7).result() == 7  # a failed job gives its slot back


def test_submit_waits_while_limit_jobs_are_in_flight() -> None:
    pool = Background(threads=2, limit=2)
    gate = threading.Event()
    held = [pool.submit(gate.wait) for _ in range(2)]
    third: list[object] = []
    t = threading.Thread(target=lambda: third.append(pool.submit(lambda: "third").result()))
    t.start()
    t.join(0.3)
    assert t.is_alive() and third == []  # blocked: two jobs hold the slots
    gate.set()
    t.join(5.0)
    assert third == ["third"] and all(f.result() for f in held)


def test_the_process_has_one_background() -> None:
    assert background() is background()
