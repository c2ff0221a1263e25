"""The grabber thread: requests are never lost silently, stop means now."""

from __future__ import annotations

import threading

from agent.capture.screen import FrameTaker
from agent.events import Event, Frame


def wait_until(pred) -> None:
    done = threading.Event()
    for _ in range(500):
        if pred():
            return
        done.wait(0.01)
    raise AssertionError("condition not reached in 5 s")


class GatedGrabber:
    """Grabs only when the test opens the gate; can be told to fail."""

    def __init__(self) -> None:
        self.gate = threading.Semaphore(0)
        self.entered = threading.Semaphore(0)
        self.fail = False
        self.closed = False

    def grab(self, t_ns: int, reason: str) -> Frame:
        self.entered.release()
        assert self.gate.acquire(timeout=5)
        if self.fail:
            raise OSError("no screen")
        return Frame(t_ns, 0, 0, 1, 1, "webp", reason, b"")

    def close(self) -> None:
        self.closed = True


def test_requests_during_a_grab_are_served_by_the_next_one() -> None:
    grabber, got = GatedGrabber(), []
    taker = FrameTaker(grabber, got.append)
    taker.start()
    taker.request("start")
    assert grabber.entered.acquire(timeout=5)  # grabbing "start"
    taker.request("click")
    taker.request("focus")  # merged with "click": latest reason wins
    grabber.gate.release()
    assert grabber.entered.acquire(timeout=5)
    grabber.gate.release()
    wait_until(lambda: len(got) == 2)
    taker.stop()
    assert [f.reason for f in got if isinstance(f, Frame)] == ["start", "focus"]
    assert taker.frames == 2 and taker.skipped == 0 and grabber.closed


def test_pending_and_in_flight_requests_are_counted_when_stopped() -> None:
    grabber, got = GatedGrabber(), []
    taker = FrameTaker(grabber, got.append)
    taker.start()
    taker.request("click")
    assert grabber.entered.acquire(timeout=5)
    stopper = threading.Thread(target=taker.stop)
    stopper.start()
    wait_until(lambda: taker._stopping)  # stop has begun before the grab can finish
    taker.request("click")  # may land before or after the stop sentinel: counted either way
    grabber.gate.release()
    stopper.join(5)
    assert got == []  # nothing delivered once stop began
    assert taker.skipped >= 1 and taker.frames == 0


def test_failures_are_counted_and_the_thread_goes_on() -> None:
    grabber, got = GatedGrabber(), []
    taker = FrameTaker(grabber, got.append)
    taker.start()
    grabber.fail = True
    taker.request("click")
    assert grabber.entered.acquire(timeout=5)
    grabber.gate.release()
    wait_until(lambda: taker.failures == 1)
    grabber.fail = False
    taker.request("click")
    assert grabber.entered.acquire(timeout=5)
    grabber.gate.release()
    wait_until(lambda: len(got) == 1)
    taker.stop()
    assert taker.failures == 1 and taker.frames == 1
    events: list[Event] = got
    assert events[0].KIND == "frame"
