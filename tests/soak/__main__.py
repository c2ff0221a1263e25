"""``python -m tests.soak``: soak the real agent, write CSV and PNGs, exit 1 if anything grew or leaked.

    SOAK_MINUTES=60 python -m tests.soak            # what `make soak` runs
    python -m tests.soak --minutes 4 --out /tmp/s   # a short run elsewhere
    python -m tests.soak --check docs/soak          # judge an earlier run's samples again, redraw
    python -m tests.soak --minutes 3 --inject-leak --out /tmp/leak   # must fail (RSS, PSS, files)

Exit codes: 0 nothing grew, 1 a metric grew or leaked (each FAIL line says which, by how much and
the threshold), 2 the soak could not run (a missing tool, the agent did not start).
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import os
import re
import sys
from collections.abc import Sequence
from dataclasses import asdict, fields
from pathlib import Path

from tests.soak.growth import Row, Thresholds, Verdict, evaluate, failures
from tests.soak.plot import Series, line_plot

DEFAULT_OUT = Path(__file__).resolve().parents[2] / "docs" / "soak"
ROW_FIELDS = [f.name for f in fields(Row) if f.name != "loss"] + ["loss"]


def _minutes_default() -> float:
    raw = os.environ.get("SOAK_MINUTES", "60")
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not 0.25 <= value <= 24 * 60:
        print(f"SOAK_MINUTES={raw!r} is not a number of minutes between 0.25 and 1440", file=sys.stderr)
        sys.exit(2)
    return value


def write_rows(path: Path, rows: Sequence[Row]) -> None:
    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(ROW_FIELDS)
        for r in rows:
            d = asdict(r)
            d["loss"] = json.dumps(r.loss, sort_keys=True, separators=(",", ":"))
            w.writerow(
                [
                    "" if d[k] is None else (f"{d[k]:.3f}" if isinstance(d[k], float) else d[k])
                    for k in ROW_FIELDS
                ]
            )


def read_rows(path: Path) -> list[Row]:
    rows = []
    with path.open(encoding="utf-8") as f:
        for d in csv.DictReader(f):
            kw: dict[str, object] = {}
            for fd in fields(Row):
                raw = d.get(fd.name, "")
                if fd.name == "loss":
                    kw[fd.name] = {str(k): int(v) for k, v in json.loads(raw or "{}").items()}
                elif fd.name in ("phase", "state"):
                    kw[fd.name] = raw
                elif fd.name in ("queue_events", "queue_frames"):
                    kw[fd.name] = int(raw) if raw else None
                elif not raw and fd.name.endswith("_uss_mb"):
                    kw[fd.name] = 0.0  # samples of a soak from before USS was sampled
                elif fd.type in ("int", int):
                    kw[fd.name] = int(raw)
                else:
                    kw[fd.name] = float(raw)
            rows.append(Row(**kw))  # type: ignore[arg-type]
    return rows


def plots(
    rows: Sequence[Row], phases: Sequence[tuple[float, float, str]], warmup_s: float
) -> dict[str, bytes]:
    """The PNGs: memory, CPU, threads and files, and the agent's activity (frames, events, loss)."""
    xs = [r.t_s / 60 for r in rows]
    ph = [(a / 60, b / 60, n) for a, b, n in phases]
    wu = warmup_s / 60

    def s(label: str, ys: Sequence[float]) -> Series:
        return Series(label, xs, list(ys))

    return {
        "memory.png": line_plot(
            "optin soak: memory (MiB)",
            "MiB",
            [
                s("agent RSS", [r.agent_rss_mb for r in rows]),
                s("agent PSS", [r.agent_pss_mb for r in rows]),
                s("agent USS", [r.agent_uss_mb for r in rows]),
                s("children RSS", [r.children_rss_mb for r in rows]),
                s("children PSS", [r.children_pss_mb for r in rows]),
                s("children USS", [r.children_uss_mb for r in rows]),
            ],
            phases=ph,
            warmup_min=wu,
        ),
        "cpu.png": line_plot(
            "optin soak: CPU (% of one core, per sample interval)",
            "%",
            [s("agent", [r.agent_cpu_pct for r in rows]), s("children", [r.children_cpu_pct for r in rows])],
            phases=ph,
            warmup_min=wu,
        ),
        "threads-files.png": line_plot(
            "optin soak: threads and open files",
            "count",
            [
                s("agent threads", [r.agent_threads for r in rows]),
                s("agent open files", [r.agent_fds for r in rows]),
                s("children threads", [r.children_threads for r in rows]),
                s("children open files", [r.children_fds for r in rows]),
            ],
            phases=ph,
            warmup_min=wu,
        ),
        "activity.png": line_plot(
            "optin soak: frames stored, events written / 10, loss",
            "count",
            [
                s("frames", [r.frames for r in rows]),
                s("events written / 10", [r.events_written / 10 for r in rows]),
                s("dropped + lost", [r.dropped + sum(r.loss.values()) for r in rows]),
                *(
                    [s("queue depth", [(r.queue_events or 0) + (r.queue_frames or 0) for r in rows])]
                    if any(r.queue_events is not None for r in rows)
                    else []
                ),
            ],
            phases=ph,
            warmup_min=wu,
        ),
    }


def summary_text(verdicts: Sequence[Verdict], header: Sequence[str]) -> str:
    return "\n".join([*header, "", *(v.message() for v in verdicts), ""])


def _header(rows: Sequence[Row], meta: dict[str, object]) -> list[str]:
    late = [r for r in rows if r.t_s >= float(str(meta["warmup_s"]))] or list(rows)

    def rng(vals: Sequence[float]) -> str:
        return f"{min(vals):.1f} / {sorted(vals)[len(vals) // 2]:.1f} / {max(vals):.1f}" if vals else "-"

    return [
        "optin soak: " + ", ".join(f"{k} {v}" for k, v in meta.items()),
        f"samples {len(rows)}; after the warm-up (min / median / max):",
        f"  agent RSS MiB      {rng([r.agent_rss_mb for r in late])}",
        f"  agent PSS MiB      {rng([r.agent_pss_mb for r in late])}",
        f"  agent USS MiB      {rng([r.agent_uss_mb for r in late])}",
        f"  children RSS MiB   {rng([r.children_rss_mb for r in late])}",
        f"  children PSS MiB   {rng([r.children_pss_mb for r in late])}",
        f"  children USS MiB   {rng([r.children_uss_mb for r in late])}",
        f"  agent CPU %        {rng([r.agent_cpu_pct for r in late])}",
        f"  agent threads      {rng([float(r.agent_threads) for r in late])}",
        f"  agent open files   {rng([float(r.agent_fds) for r in late])}",
        f"  children           {rng([float(r.children) for r in late])}",
        f"at the end: frames {rows[-1].frames}, events written {rows[-1].events_written}, "
        f"dropped {rows[-1].dropped}, loss {json.dumps(rows[-1].loss, sort_keys=True)}"
        if rows
        else "no samples",
    ]


def _recorded_exit(line: str) -> int | None:
    """The agent's exit code from a summary's first line (``agent_exit N``); 0 when not recorded."""
    match = re.search(r"agent_exit (-?\d+|None)", line)
    if match is None:
        return 0
    return None if match.group(1) == "None" else int(match.group(1))


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tests.soak", description=__doc__.splitlines()[0])
    p.add_argument(
        "--minutes", type=float, default=None, help="length of the run (default: SOAK_MINUTES or 60)"
    )
    p.add_argument("--interval", type=float, default=None, help="seconds between samples (default 5)")
    p.add_argument(
        "--warmup-minutes", type=float, default=None, help="default: 5, or a quarter of a shorter run"
    )
    p.add_argument("--memory-mb", type=float, default=Thresholds.memory_mb, help="growth that fails (MiB)")
    p.add_argument("--slope-mb-per-h", type=float, default=Thresholds.slope_mb_per_h, help="slope that fails")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help="where CSV, PNGs and summary go (docs/soak)")
    p.add_argument("--size", default="1920x1080", help="the private display's size")
    p.add_argument(
        "--check",
        type=Path,
        default=None,
        metavar="DIR",
        help="judge DIR/samples.csv again, rewrite DIR's summary and PNGs (the run's own minutes); no run",
    )
    p.add_argument(
        "--idle-cpu-pp", type=float, default=Thresholds.idle_cpu_pp, help="idle CPU growth that fails"
    )
    p.add_argument(
        "--inject-leak",
        action="store_true",
        help="prove that the soak fails: the agent keeps 1 MiB more a second and a file more every 11 s",
    )
    args = p.parse_args(argv)
    rows: list[Row] = []
    if args.check is not None:
        rows = read_rows(args.check / "samples.csv")
        minutes = args.minutes if args.minutes is not None else (rows[-1].t_s / 60 if rows else 0.0)
    else:
        minutes = args.minutes if args.minutes is not None else _minutes_default()
    warmup_s = 60 * (args.warmup_minutes if args.warmup_minutes is not None else min(5.0, minutes / 4))
    th = Thresholds(
        warmup_s=warmup_s,
        memory_mb=args.memory_mb,
        slope_mb_per_h=args.slope_mb_per_h,
        idle_cpu_pp=args.idle_cpu_pp,
    )
    if args.check is not None:
        summary = args.check / "summary.txt"
        ran = summary.read_text(encoding="utf-8").splitlines()[:1] if summary.exists() else []
        ran = [line for line in ran if line.startswith("optin soak: minutes")]
        exit_code = _recorded_exit(ran[0] if ran else "")
        ran_s = re.search(r"ran_s (\d+)", ran[0]) if ran else None
        verdicts = evaluate(rows, th, exit_code=exit_code, ran_s=float(ran_s.group(1)) if ran_s else None)
        header = _header(rows, {"warmup_s": f"{warmup_s:g}", "judged again": str(args.check)})
        text = summary_text(verdicts, [*ran, *header[1 if ran else 0 :]])
        summary.write_text(text, encoding="utf-8")
        print(text)
        with (args.check / "phases.csv").open(encoding="utf-8") as f:
            phases = [(float(d["start_s"]), float(d["end_s"]), d["phase"]) for d in csv.DictReader(f)]
        for name, png in plots(rows, phases, warmup_s).items():
            (args.check / name).write_bytes(png)
        return 1 if failures(verdicts) else 0

    if sys.platform == "win32":
        print("the soak runs on Linux: it reads /proc and drives an X display", file=sys.stderr)
        return 2
    from agent.backends.virtual_display import missing_tools
    from agent.errors import OptinError
    from tests.soak.driver import exit_on_signals, run_soak

    missing = missing_tools()
    if missing:
        print(f"the soak needs {', '.join(missing)}: run `make system-deps`", file=sys.stderr)
        return 2
    width, _, height = args.size.partition("x")
    try:
        with exit_on_signals():
            run = run_soak(
                minutes,
                interval_s=args.interval,
                width=int(width),
                height=int(height),
                inject_leak=args.inject_leak,
                say=lambda m: print(f"soak: {m}", file=sys.stderr, flush=True),
            )
    except OptinError as exc:
        print(f"soak: could not run: {exc}", file=sys.stderr)
        return 2
    th = dataclasses.replace(th, max_gap_s=max(th.max_gap_s, 4 * run.interval_s))
    verdicts = evaluate(run.rows, th, run.exit_code, run.pause_failures, ran_s=run.seconds)
    meta: dict[str, object] = {
        "minutes": f"{minutes:g}",
        "ran_s": f"{run.seconds:.0f}",
        "cycles": run.cycles,
        "phase_scale": f"{run.scale:.2f}",
        "interval_s": f"{run.interval_s:g}",
        "warmup_s": f"{warmup_s:g}",
        "display": args.size,
        "agent_exit": run.exit_code,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    write_rows(args.out / "samples.csv", run.rows)
    with (args.out / "processes.csv").open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["t_s", "pid", "ppid", "role", "rss_mb", "pss_mb", "uss_mb", "cpu_pct", "threads", "fds"])
        for pr in run.procs:
            w.writerow(
                [
                    pr.t_s,
                    pr.pid,
                    pr.ppid,
                    pr.role,
                    f"{pr.rss_mb:.3f}",
                    f"{pr.pss_mb:.3f}",
                    f"{pr.uss_mb:.3f}",
                    f"{pr.cpu_pct:.2f}",
                    pr.threads,
                    pr.fds,
                ]
            )
    with (args.out / "phases.csv").open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["start_s", "end_s", "phase"])
        w.writerows([f"{a:.2f}", f"{b:.2f}", n] for a, b, n in run.phases)
    for name, png in plots(run.rows, run.phases, warmup_s).items():
        (args.out / name).write_bytes(png)
    text = summary_text(verdicts, _header(run.rows, meta))
    (args.out / "summary.txt").write_text(text, encoding="utf-8")
    print(text)
    failed = failures(verdicts)
    if failed:
        print(f"soak FAILED: {len(failed)} check(s): " + "; ".join(v.metric for v in failed), file=sys.stderr)
        return 1
    print(f"soak passed; CSV, PNGs and summary in {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
