"""Did anything grow or leak during the soak?  Pure functions over the sampled rows.

Each check gives a :class:`Verdict`: the metric, how much it grew (or how many were lost), the
threshold and whether that fails the soak.  The rules (see docs/performance.md, "Soak"):

- **memory** (agent RSS and USS, children's RSS and USS): after the warm-up, the median of the last
  third of the samples minus the median of the first third (robust to the spike of one encode) must
  not exceed ``memory_mb`` (samples taken while paused are left out); on a window of at least
  ``slope_window_min`` minutes the Theil-Sen slope must also stay under ``slope_mb_per_h``.  PSS is
  sampled and plotted but not judged: it is a share of the pages other processes map too (every GTK
  program shares GTK's libraries), so it moves when they start or stop; USS, the pages this process
  alone holds, and RSS, all it touches, move only with the process itself;
- **threads and open files** (agent and children) are compared like for like: the median of each
  later idle stretch against the first idle stretch after the warm-up;
- **queue**: by the end of every idle stretch (no input, the animation stopped) the agent must have
  caught up: the queue depth it reports is 0, or, when it does not report one, nothing but one
  keyframe was written over the stretch's last samples;
- **loss**: any event dropped, frame skipped or failed, paste or element lookup lost fails;
- **idle CPU**: the agent's median CPU per idle stretch, last third of the stretches against the first
  third, must not grow by more than ``idle_cpu_pp`` percentage points (judged from 3 stretches on);
- **life**: the agent was sampled all along (no gap over ``max_gap_s``), never reported ``error``,
  each pause took, and it exited 0 when stopped.
"""

from __future__ import annotations

import itertools
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

#: Phases of the scripted cycle (see tests/soak/driver.py); ``idle`` and ``paused`` have no input.
PHASES = ("typing", "pointer", "switching", "animation", "idle", "paused")

#: Most points fed to the Theil-Sen slope (its cost is quadratic); longer series are thinned evenly.
MAX_SLOPE_POINTS = 400


@dataclass
class Row:
    """One sampling instant: the agent, its children (summed), and its status."""

    t_s: float
    phase: str
    cycle: int
    agent_rss_mb: float
    agent_pss_mb: float
    agent_cpu_pct: float
    agent_threads: int
    agent_fds: int
    #: private memory (USS); 0 in the samples of a soak from before it was sampled
    agent_uss_mb: float = 0.0
    children: int = 0
    children_rss_mb: float = 0.0
    children_pss_mb: float = 0.0
    children_uss_mb: float = 0.0
    children_cpu_pct: float = 0.0
    children_threads: int = 0
    children_fds: int = 0
    state: str = ""
    events_written: int = 0
    frames: int = 0
    dropped: int = 0
    #: every loss counter of the status (``loss``), summed over the sessions seen so far
    loss: dict[str, int] = field(default_factory=dict)
    #: queue depths the agent reports (``queues`` in its status), when it reports them
    queue_events: int | None = None
    queue_frames: int | None = None


@dataclass(frozen=True)
class Thresholds:
    """What fails the soak (defaults for the one-hour run)."""

    warmup_s: float = 300.0
    memory_mb: float = 10.0
    slope_mb_per_h: float = 10.0
    slope_window_min: float = 20.0
    fds: int = 1
    threads: int = 1
    idle_cpu_pp: float = 1.0
    #: samples at the end of an idle stretch over which the written count must not move
    settled_samples: int = 2
    #: longest time without a sample (the agent gone, or the sampler stuck)
    max_gap_s: float = 20.0


@dataclass(frozen=True)
class Verdict:
    metric: str
    value: float
    threshold: float
    unit: str
    failed: bool
    detail: str = ""

    def message(self) -> str:
        """One line: what was measured against what; FAIL lines say which metric grew and by how much."""
        head = "FAIL" if self.failed else "ok  "
        return (
            f"{head} {self.metric}: {self.value:+.2f} {self.unit} (threshold {self.threshold:g} {self.unit})"
            + (f"; {self.detail}" if self.detail else "")
        )


def theil_sen(ts: Sequence[float], ys: Sequence[float]) -> float:
    """The median of the pairwise slopes (units of ``ys`` per unit of ``ts``); 0 for fewer than 2 points."""
    if len(ts) != len(ys):
        raise ValueError(f"{len(ts)} times but {len(ys)} values")
    step = max(1, -(-len(ts) // MAX_SLOPE_POINTS))
    xs, vs = ts[::step], ys[::step]
    slopes = [
        (vs[j] - vs[i]) / (xs[j] - xs[i])
        for i in range(len(xs))
        for j in range(i + 1, len(xs))
        if xs[j] > xs[i]
    ]
    return statistics.median(slopes) if slopes else 0.0


def thirds_growth(ys: Sequence[float]) -> float:
    """Median of the last third minus median of the first third; 0 for fewer than 3 values."""
    n = len(ys) // 3
    if n == 0:
        return 0.0
    return statistics.median(ys[-n:]) - statistics.median(ys[:n])


def after_warmup(rows: Sequence[Row], th: Thresholds) -> list[Row]:
    """The rows sampled after the warm-up."""
    return [r for r in rows if r.t_s >= th.warmup_s]


def check_memory(
    name: str, rows: Sequence[Row], get: Callable[[Row], float], th: Thresholds
) -> list[Verdict]:
    """The memory rule for one series (MB) over the rows after the warm-up, pauses left out (a paused
    agent frees its frame buffers: a different regime, not a return to the baseline)."""
    late = [r for r in after_warmup(rows, th) if r.phase != "paused"]
    if len(late) < 6:
        return [
            Verdict(
                f"{name} growth", 0.0, th.memory_mb, "MB", True, f"only {len(late)} samples after the warm-up"
            )
        ]
    ts, ys = [r.t_s for r in late], [get(r) for r in late]
    growth = thirds_growth(ys)
    third = len(ys) // 3
    before, after = statistics.median(ys[:third]), statistics.median(ys[-third:])
    slope_h = theil_sen(ts, ys) * 3600
    span_min = (ts[-1] - ts[0]) / 60
    out = [
        Verdict(
            f"{name} growth",
            growth,
            th.memory_mb,
            "MB",
            growth > th.memory_mb,
            f"median of the first third {before:.1f}, of the last {after:.1f} MB over {span_min:.1f} min "
            f"after the warm-up; min {min(ys):.1f}, max {max(ys):.1f}",
        )
    ]
    long_enough = span_min >= th.slope_window_min
    out.append(
        Verdict(
            f"{name} slope",
            slope_h,
            th.slope_mb_per_h,
            "MB/h",
            long_enough and slope_h > th.slope_mb_per_h,
            "Theil-Sen" + ("" if long_enough else f"; not judged: window under {th.slope_window_min:g} min"),
        )
    )
    return out


def _not_sampled(name: str) -> Verdict:
    return Verdict(name, 0.0, 0.0, "MB", False, "not judged: not sampled (a soak recorded before USS was)")


def idle_stretches(rows: Sequence[Row]) -> list[list[Row]]:
    """Consecutive runs of ``idle`` rows, in order."""
    out: list[list[Row]] = []
    prev: Row | None = None
    for r in rows:
        if r.phase == "idle":
            if prev is None or prev.phase != "idle" or prev.cycle != r.cycle:
                out.append([])
            out[-1].append(r)
        prev = r
    return out


def check_count(
    name: str, rows: Sequence[Row], get: Callable[[Row], int], limit: int, th: Thresholds
) -> Verdict:
    """Threads or open files: each later idle stretch's median against the first after the warm-up."""
    stretches = [s for s in idle_stretches(after_warmup(rows, th)) if s]
    if len(stretches) < 2:
        return Verdict(
            name, 0.0, limit, "", False, f"not judged: {len(stretches)} idle stretch(es) after warm-up"
        )
    first = statistics.median(get(r) for r in stretches[0])
    later = [statistics.median(get(r) for r in s) for s in stretches[1:]]
    growth = max(later) - first
    return Verdict(
        name,
        growth,
        limit,
        "",
        growth > limit,
        f"first idle stretch {first:g}, later ones {min(later):g}..{max(later):g}",
    )


def still_behind(first: Row, last: Row) -> int:
    """Events written between two samples of an idle stretch that show the agent still catching up:
    every event but frames, and every frame but one.  One frame may come: the keyframe of a screen
    that changed with no action (the animation before the stretch), stored up to ``keyframe_s``
    (30 s) after the last stored frame."""
    frames = last.frames - first.frames
    return (last.events_written - first.events_written - frames) + max(0, frames - 1)


def check_drained(rows: Sequence[Row], th: Thresholds) -> Verdict:
    """By the end of each idle stretch the agent caught up: the queue depths it reports are 0, or
    (none reported) nothing but one keyframe was written over the stretch's last samples."""
    stretches = idle_stretches(rows)
    judged = stuck = 0
    worst = 0.0
    for s in stretches:
        tail = s[-th.settled_samples :]
        if len(tail) < th.settled_samples:
            continue
        judged += 1
        depths = [d for d in (tail[-1].queue_events, tail[-1].queue_frames) if d is not None]
        behind = float(sum(depths) if depths else still_behind(tail[0], tail[-1]))
        if behind > 0:
            stuck += 1
            worst = max(worst, behind)
    reported = any(r.queue_events is not None for r in rows)
    how = (
        "queue depth reported by the agent"
        if reported
        else "events written still moving, one keyframe allowed (no queue depth reported)"
    )
    if judged == 0:
        return Verdict("queue drained when idle", 0.0, 0, "", True, "no idle stretch long enough to judge")
    return Verdict(
        "queue drained when idle",
        worst,
        0,
        "events",
        stuck > 0,
        f"{stuck} of {judged} idle stretches ended behind; judged by {how}",
    )


def check_loss(rows: Sequence[Row]) -> list[Verdict]:
    """Any loss the agent counted (P9), at the last sample."""
    if not rows:
        return [Verdict("loss", 0.0, 0, "", True, "no samples")]
    last = rows[-1]
    counts = {"events dropped": last.dropped, **{f"loss.{k}": v for k, v in sorted(last.loss.items())}}
    return [Verdict(k, float(v), 0, "", v > 0, "") for k, v in counts.items()]


def check_idle_cpu(rows: Sequence[Row], th: Thresholds) -> Verdict:
    """The agent's CPU when idle, stretch by stretch after the warm-up: the median of each stretch
    (its first sample left out: that interval still holds the activity before it), then the median
    of the last third of those against the first third.  Fewer than 3 stretches are not judged: two
    30 s stretches on a shared machine differ by more than a trend would."""
    stretches = [s[1:] for s in idle_stretches(after_warmup(rows, th)) if len(s) > 1]
    if len(stretches) < 3:
        return Verdict(
            "agent idle CPU",
            0.0,
            th.idle_cpu_pp,
            "pp",
            False,
            f"not judged: {len(stretches)} idle stretch(es)",
        )
    medians = [statistics.median(r.agent_cpu_pct for r in s) for s in stretches]
    growth = thirds_growth(medians)
    return Verdict(
        "agent idle CPU",
        growth,
        th.idle_cpu_pp,
        "pp",
        growth > th.idle_cpu_pp,
        f"{len(medians)} idle stretches, medians {min(medians):.2f}..{max(medians):.2f} % of a core "
        f"(first {medians[0]:.2f}, last {medians[-1]:.2f})",
    )


def check_life(
    rows: Sequence[Row], exit_code: int | None, pause_failures: Sequence[str] = ()
) -> list[Verdict]:
    """The agent never reported an error, paused each time it was asked (``optin pause`` answered and
    the status said ``paused``; the driver lists the times it did not), and exited 0 after SIGTERM."""
    errors = sum(1 for r in rows if r.state == "error")
    return [
        Verdict("agent error states", float(errors), 0, "samples", errors > 0, ""),
        Verdict(
            "pauses not taken",
            float(len(pause_failures)),
            0,
            "",
            bool(pause_failures),
            "; ".join(pause_failures[:3]),
        ),
        Verdict(
            "agent exit code",
            -1.0 if exit_code is None else float(exit_code),
            0,
            "",
            exit_code != 0,
            "after SIGTERM at the end" + ("; it did not exit in time" if exit_code is None else ""),
        ),
    ]


def check_gaps(rows: Sequence[Row], th: Thresholds, ran_s: float | None) -> Verdict:
    """The agent was sampled all along: no gap longer than ``max_gap_s`` between samples, nor between
    the last sample and the end of the run (``ran_s``, when known)."""
    times = [0.0, *(r.t_s for r in rows), *([ran_s] if ran_s is not None else [])]
    gaps = [(b - a, a) for a, b in itertools.pairwise(times)]
    worst, at = max(gaps, default=(0.0, 0.0))
    return Verdict(
        "longest gap between samples", worst, th.max_gap_s, "s", worst > th.max_gap_s, f"from {at:.0f} s"
    )


def evaluate(
    rows: Sequence[Row],
    th: Thresholds,
    exit_code: int | None = 0,
    pause_failures: Sequence[str] = (),
    ran_s: float | None = None,
) -> list[Verdict]:
    """Every check of the soak, in the order they are printed."""
    out: list[Verdict] = [check_gaps(rows, th, ran_s)]
    out += check_memory("agent RSS", rows, lambda r: r.agent_rss_mb, th)
    uss = any(r.agent_uss_mb for r in rows)  # False for the samples of a soak from before USS
    out += (
        check_memory("agent USS", rows, lambda r: r.agent_uss_mb, th) if uss else [_not_sampled("agent USS")]
    )
    if any(r.children for r in rows):
        out += check_memory("children RSS", rows, lambda r: r.children_rss_mb, th)
        if uss:
            out += check_memory("children USS", rows, lambda r: r.children_uss_mb, th)
        out.append(check_count("children threads", rows, lambda r: r.children_threads, th.threads, th))
        out.append(check_count("children open files", rows, lambda r: r.children_fds, th.fds, th))
        out.append(check_count("children count", rows, lambda r: r.children, 0, th))
    out.append(check_count("agent threads", rows, lambda r: r.agent_threads, th.threads, th))
    out.append(check_count("agent open files", rows, lambda r: r.agent_fds, th.fds, th))
    out.append(check_drained(rows, th))
    out += check_loss(rows)
    out.append(check_idle_cpu(rows, th))
    out += check_life(rows, exit_code, pause_failures)
    return out


def failures(verdicts: Sequence[Verdict]) -> list[Verdict]:
    return [v for v in verdicts if v.failed]
