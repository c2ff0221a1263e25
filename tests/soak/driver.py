"""Run the real agent on a private display through cycles of scripted activity, sampling it.

Like ``optin demo`` (agent/demo.py): its own OPTIN_HOME, a throwaway study consented to with the CLI,
``python -m agent run`` on a private Xvfb display with openbox, driven with xdotool.  A cycle is
typing, pointer work (clicks and scrolls), switching between four windows, watching the animation,
an idle stretch (no input, the animation stopped with SIGSTOP) and a pause (``optin pause``, typing
that is not recorded, ``optin resume``).  A sampling thread records :class:`~tests.soak.growth.Row`
every ``interval_s``.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agent.backends.platform_calls import end_process_group
from agent.backends.virtual_display import VirtualDisplay, wait_for
from agent.demo import agent_env
from agent.errors import OptinError
from agent.paths import Dirs, optin_command, write_private_file
from tests.soak import sampler
from tests.soak.growth import Row

if sys.platform == "win32":  # also tells mypy --platform win32 not to check the rest
    raise ImportError("the soak drives an X display and stops processes with SIGSTOP: Linux only")

#: Seconds of each phase of a cycle at full length (135 s a cycle).
CYCLE = (
    ("typing", 30.0),
    ("pointer", 20.0),
    ("switching", 20.0),
    ("animation", 20.0),
    ("idle", 30.0),
    ("paused", 15.0),
)

TERMINALS = ("soak terminal 1", "soak terminal 2", "soak terminal 3")
ANIMATION = "soak animation"
#: Typing speed: 8 keys a second, a steady typist.
TYPE_DELAY_MS = 125
AGENT_TIMEOUT_S = 30.0
MB = 1024.0  # kB per MB (MiB, as /proc counts)


class SoakFailed(OptinError):
    """The soak could not run (a link of the chain failed), as opposed to a metric that grew."""


@dataclass
class ProcRow:
    """One process at one sampling instant (processes.csv)."""

    t_s: float
    pid: int
    ppid: int
    role: str
    rss_mb: float
    pss_mb: float
    uss_mb: float
    cpu_pct: float
    threads: int
    fds: int


@dataclass
class Run:
    """What a soak run produced."""

    minutes: float
    interval_s: float
    scale: float
    rows: list[Row] = field(default_factory=list)
    procs: list[ProcRow] = field(default_factory=list)
    phases: list[tuple[float, float, str]] = field(default_factory=list)
    pause_failures: list[str] = field(default_factory=list)
    exit_code: int | None = None
    cycles: int = 0
    seconds: float = 0.0


def plan(minutes: float, interval_s: float | None) -> tuple[float, float]:
    """(phase scale, sampling interval): a run shorter than two full cycles gets two shorter cycles."""
    total = minutes * 60
    full = sum(s for _, s in CYCLE)
    scale = min(1.0, total / (2 * full))
    return scale, interval_s if interval_s is not None else max(0.5, round(10.0 * scale) / 2)


def run_soak(
    minutes: float,
    *,
    interval_s: float | None = None,
    width: int = 1920,
    height: int = 1080,
    adopt_daemons: bool = True,
    inject_leak: bool = False,
    say: Callable[[str], None] = lambda _m: None,
) -> Run:
    """Start a private display and the agent, drive ``minutes`` of cycles, stop; return the samples."""
    scale, interval = plan(minutes, interval_s)
    run = Run(minutes=minutes, interval_s=interval, scale=scale)
    with tempfile.TemporaryDirectory(prefix="optin-soak-") as tmp:
        work = Path(tmp)
        with VirtualDisplay(width, height, adopt_daemons=adopt_daemons) as vd:
            say(f"private display {vd.display} ({width}x{height}) is up")
            _soak_on(vd, work, run, say, inject_leak=inject_leak)
    return run


def _soak_on(
    vd: VirtualDisplay, work: Path, run: Run, say: Callable[[str], None], *, inject_leak: bool = False
) -> None:
    env = agent_env(vd, work)
    if inject_leak:  # tests/soak/leak/sitecustomize.py, in the agent process only
        env["PYTHONPATH"] = os.pathsep.join([str(Path(__file__).with_name("leak")), _repo_root()])
        say("a leak is injected into the agent (--inject-leak): this soak must fail")
    consent(env, work)
    for i, title in enumerate(TERMINALS):
        shell = "seq 1 4000; exec sh" if i == 1 else "exec sh"
        vd.spawn(
            [
                "xterm",
                "-T",
                title,
                "-fa",
                "DejaVu Sans Mono",
                "-fs",
                "11",
                "-geometry",
                f"80x20+{40 + 60 * i}+{60 + 50 * i}",
                "-e",
                "sh",
                "-c",
                shell,
            ],
        )
    animator = vd.spawn(
        [sys.executable, "-m", "tests.soak.animation", ANIMATION], env={**vd.env, "PYTHONPATH": _repo_root()}
    )
    windows = {title: _window(vd, title) for title in (*TERMINALS, ANIMATION)}
    log = work / "agent-stderr.log"
    with log.open("wb") as err:
        agent = vd.spawn(optin_command("run"), env=env, stdout=True, stderr=err)
    await_recording(agent, log)
    say(f"agent {agent.pid} recording; soaking for {run.minutes:g} min, a sample every {run.interval_s:g} s")
    dirs = _dirs(work)
    driver = _Driver(vd, env, windows, animator, run)
    stop = threading.Event()
    t0 = time.monotonic()
    sampling = _Sampler(agent.pid, dirs, driver, run, t0)
    thread = threading.Thread(target=sampling.loop, args=(stop,), daemon=True)
    thread.start()
    try:
        driver.drive(t0, t0 + run.minutes * 60, say)
    finally:
        stop.set()
        thread.join(run.interval_s + 10)
        with contextlib.suppress(ProcessLookupError):
            os.kill(animator.pid, signal.SIGCONT)
        run.seconds = time.monotonic() - t0
        end_process_group(agent.pid)
        try:
            run.exit_code = agent.wait(AGENT_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            run.exit_code = None
    if run.exit_code != 0:
        say(f"agent exit code {run.exit_code}: {_tail(log)}")


def _window(vd: VirtualDisplay, title: str) -> str:
    found: list[str] = []

    def appeared() -> bool:
        found[:] = vd.search(title)
        return bool(found)

    if not wait_for(appeared, 15.0):
        raise SoakFailed(f"the window {title!r} did not appear on the private display")
    return found[0]


def _repo_root() -> str:
    return str(Path(__file__).resolve().parents[2])


def consent(env: dict[str, str], work: Path) -> None:
    from pyrage import x25519

    from agent.study import demo_study_toml, parse_study

    text = demo_study_toml(str(x25519.Identity.generate().to_public()))
    study = work / "soak-study.toml"
    write_private_file(study, text.encode())
    _optin(
        env, "consent", "grant", "--study", str(study), "--accept-text-sha256", parse_study(text).terms_sha256
    )


def _dirs(work: Path) -> Dirs:
    """The agent's directories, resolved exactly as its own commands do (OPTIN_HOME)."""
    from agent.paths import dirs

    saved = os.environ.get("OPTIN_HOME")
    os.environ["OPTIN_HOME"] = str(work / "home")
    try:
        return dirs()
    finally:
        if saved is None:
            os.environ.pop("OPTIN_HOME", None)
        else:
            os.environ["OPTIN_HOME"] = saved


def _optin(env: dict[str, str], *args: str) -> str:
    out = subprocess.run(
        optin_command(*args), env=env, capture_output=True, text=True, timeout=60, check=False
    )
    if out.returncode != 0:
        raise SoakFailed(f"`optin {args[0]}` failed (exit {out.returncode}): {out.stderr.strip()}")
    return out.stdout


def await_recording(agent: subprocess.Popen[bytes], log: Path) -> None:
    if agent.stdout is None:
        raise SoakFailed("the agent has no output pipe")
    ready, _, _ = select.select([agent.stdout], [], [], AGENT_TIMEOUT_S)
    line = agent.stdout.readline().decode().strip() if ready else ""
    if not line.startswith("optin: recording session "):
        raise SoakFailed(f"the agent did not start recording: {_tail(log) or line or 'no output'}")


def _tail(log: Path) -> str:
    try:
        return log.read_text(errors="replace").strip()[-500:]
    except OSError:
        return ""


class _Driver:
    """The scripted volunteer; :attr:`phase` and :attr:`cycle` tell the sampler what is going on."""

    def __init__(
        self,
        vd: VirtualDisplay,
        env: dict[str, str],
        windows: dict[str, str],
        animator: subprocess.Popen[bytes],
        run: Run,
    ) -> None:
        self.vd, self.env, self.windows, self.animator, self.run = vd, env, windows, animator, run
        self.phase = "start"
        self.cycle = 0
        self._typed = 0

    def drive(self, t0: float, end: float, say: Callable[[str], None]) -> None:
        while time.monotonic() < end:
            self.cycle += 1
            for name, seconds in CYCLE:
                start = time.monotonic()
                deadline = min(end, start + seconds * self.run.scale)
                if start >= end:
                    break
                self.phase = name
                getattr(self, f"_{name}")(deadline)
                self._sleep_until(deadline)
                self.run.phases.append((start - t0, time.monotonic() - t0, name))
            self.run.cycles = self.cycle
            say(f"cycle {self.cycle} done at {(time.monotonic() - t0) / 60:.1f} min")
        self.phase = "end"

    @staticmethod
    def _sleep_until(deadline: float) -> None:
        left = deadline - time.monotonic()
        if left > 0:
            time.sleep(left)

    def _activate(self, title: str) -> None:
        self.vd.xdotool("windowactivate", "--sync", self.windows[title])

    def _type_lines(self, deadline: float, title: str) -> None:
        self._activate(title)
        while time.monotonic() < deadline - 1.0:
            self._typed += 1
            line = "clear" if self._typed % 15 == 0 else f"echo soak line {self._typed} the quick brown fox"
            self.vd.xdotool("type", "--delay", str(TYPE_DELAY_MS), line)
            self.vd.xdotool("key", "Return")
            time.sleep(0.4)

    def _typing(self, deadline: float) -> None:
        self._type_lines(deadline, TERMINALS[0])

    def _pointer(self, deadline: float) -> None:
        self._activate(TERMINALS[1])
        spots = [(200, 200), (500, 300), (300, 420), (650, 250), (420, 360)]
        i = 0
        while time.monotonic() < deadline - 0.5:
            x, y = spots[i % len(spots)]
            i += 1
            self.vd.xdotool("mousemove", "--sync", str(x), str(y))
            self.vd.xdotool("click", "1")
            self.vd.xdotool("click", "--repeat", "3", "--delay", "60", "5" if i % 2 else "4")
            time.sleep(0.3)

    def _switching(self, deadline: float) -> None:
        order = [*TERMINALS, ANIMATION]
        i = 0
        while time.monotonic() < deadline - 0.5:
            self._activate(order[i % len(order)])
            i += 1
            time.sleep(1.2)

    def _animation(self, deadline: float) -> None:
        """Watch the animation: still for the first half, then the pointer wanders over it."""
        self._activate(ANIMATION)
        self.vd.xdotool("mousemove", "--sync", "1000", "500")
        self._sleep_until(deadline - (deadline - time.monotonic()) / 2)
        i = 0
        while time.monotonic() < deadline - 0.3:
            i += 1
            self.vd.xdotool("mousemove", str(920 + (i * 37) % 280), str(440 + (i * 23) % 200))
            time.sleep(0.2)

    def _idle(self, deadline: float) -> None:
        os.kill(self.animator.pid, signal.SIGSTOP)
        try:
            self._sleep_until(deadline)
        finally:
            os.kill(self.animator.pid, signal.SIGCONT)

    def _paused(self, deadline: float) -> None:
        at = f"cycle {self.cycle}"
        try:
            _optin(self.env, "pause")
            state = _status(self.env).get("state")
            if state != "paused":
                self.run.pause_failures.append(f"{at}: state {state!r} after `optin pause`")
            self._type_lines(deadline - 1.0, TERMINALS[2])
        except (SoakFailed, OptinError) as exc:
            self.run.pause_failures.append(f"{at}: {exc}")
        finally:
            self._sleep_until(deadline - 1.0)
            try:
                _optin(self.env, "resume")
            except SoakFailed as exc:
                self.run.pause_failures.append(f"{at}: {exc}")


def _status(env: dict[str, str]) -> dict[str, Any]:
    import json

    out = json.loads(_optin(env, "status", "--json"))
    return out if isinstance(out, dict) else {}


@dataclass
class _Sums:
    written: int = 0
    frames: int = 0
    dropped: int = 0
    loss: dict[str, int] = field(default_factory=dict)


@dataclass
class _Totals:
    """Status counters per session (a new session starts them at 0): summed for the row."""

    by_session: dict[str, dict[str, Any]] = field(default_factory=dict)

    def add(self, status: dict[str, Any]) -> _Sums:
        if status:
            self.by_session[str(status.get("session"))] = status
        out = _Sums()
        for s in self.by_session.values():
            out.written += int(s.get("events_written", 0))
            kinds = s.get("events_by_kind") or {}
            out.frames += int(kinds.get("frame", 0)) + int(kinds.get("frame_patch", 0))
            out.dropped += int(s.get("dropped", 0))
            for k, v in (s.get("loss") or {}).items():
                out.loss[k] = out.loss.get(k, 0) + int(v)
        return out


class _Sampler:
    """Every ``run.interval_s``: the agent and its children from /proc, then its status."""

    def __init__(self, pid: int, dirs: Dirs, driver: _Driver, run: Run, t0: float) -> None:
        self.pid, self.dirs, self.driver, self.run, self.t0 = pid, dirs, driver, run, t0
        self.meter = sampler.CpuMeter()
        self.totals = _Totals()

    def loop(self, stop: threading.Event) -> None:
        while not stop.is_set():
            with contextlib.suppress(Exception):  # a sample lost shows as a gap, never a crash
                self.sample()
            stop.wait(self.run.interval_s - (time.monotonic() - self.t0) % self.run.interval_s)

    def sample(self) -> None:
        now = time.monotonic()
        t = round(now - self.t0, 2)
        agent = sampler.read(self.pid)
        if agent is None:
            return
        kids = [s for s in (sampler.read(p) for p in sampler.descendants(self.pid)) if s is not None]
        phase, cycle = self.driver.phase, self.driver.cycle
        cpu = {s.pid: self.meter.percent(s, now) for s in (agent, *kids)}
        for s in (agent, *kids):
            role = "agent" if s is agent else f"child:{s.name}"
            self.run.procs.append(
                ProcRow(
                    t,
                    s.pid,
                    s.ppid,
                    role,
                    s.rss_kb / MB,
                    s.pss_kb / MB,
                    s.uss_kb / MB,
                    cpu[s.pid],
                    s.threads,
                    s.fds,
                )
            )
        status = _status_now(self.dirs)  # after /proc: its handler thread is not counted
        sums = self.totals.add(status)
        queues = status.get("queues")
        if not isinstance(queues, dict):
            queues = {}
        self.run.rows.append(
            Row(
                t_s=t,
                phase=phase,
                cycle=cycle,
                agent_rss_mb=agent.rss_kb / MB,
                agent_pss_mb=agent.pss_kb / MB,
                agent_uss_mb=agent.uss_kb / MB,
                agent_cpu_pct=cpu[agent.pid],
                agent_threads=agent.threads,
                agent_fds=agent.fds,
                children=len(kids),
                children_rss_mb=sum(k.rss_kb for k in kids) / MB,
                children_pss_mb=sum(k.pss_kb for k in kids) / MB,
                children_uss_mb=sum(k.uss_kb for k in kids) / MB,
                children_cpu_pct=sum(cpu[k.pid] for k in kids),
                children_threads=sum(k.threads for k in kids),
                children_fds=sum(k.fds for k in kids),
                state=str(status.get("state", "")),
                events_written=sums.written,
                frames=sums.frames,
                dropped=sums.dropped,
                loss=sums.loss,
                queue_events=_int_or_none(queues.get("events")),
                queue_frames=_int_or_none(queues.get("frames")),
            )
        )


def _int_or_none(v: object) -> int | None:
    return v if isinstance(v, int) and not isinstance(v, bool) else None


def _status_now(dirs: Dirs) -> dict[str, Any]:
    """The running agent's status over the control socket, or {} when it does not answer."""
    from agent.ipc_client import request

    try:
        status = request(dirs, "status", timeout=5.0).get("status")
    except OptinError:
        return {}
    return status if isinstance(status, dict) else {}


@contextlib.contextmanager
def exit_on_signals() -> Iterator[None]:
    """SIGTERM/SIGHUP end the soak like Ctrl-C, so the display and the agent are stopped."""

    def leave(signum: int, _frame: object) -> None:
        raise SystemExit(128 + signum)

    saved = {sig: signal.signal(sig, leave) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)
