"""``optin demo``: the whole chain, end to end, on a private virtual display.

1. start a private desktop (Xvfb + openbox + dunst + trayer, own D-Bus);
2. install a demo study whose recipient is a throwaway age key, grant consent;
3. start the real agent (``optin run``) with its tray icon, on that display;
4. start the study's task (``optin task start``), drive a scripted volunteer with xdotool:
   open an xterm, type, click, scroll, then fill a GTK form (its UI elements are looked up
   through AT-SPI), and end the task (``optin task done``);
5. stop the agent (SIGTERM: it seals the session), export the task's session;
6. decrypt the bundle with the standard ``age`` command and check it;
7. print a summary.  Every process and file it made is gone afterwards.

Every link that fails raises :class:`agent.errors.OptinError` with what failed.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from agent.backends.platform_calls import TERMINATE_SIGNALS, end_process_group
from agent.backends.virtual_display import VirtualDisplay, wait_for
from agent.errors import EnvironmentProblem, OptinError, UsageError
from agent.events import KeyPress
from agent.paths import optin_command, write_private_file
from agent.session_summary import pairs_text, redactions_by_place

#: Secrets the scripted volunteer types: stored locally, redacted from the keys and masked on screen.
DEMO_SECRETS = {"EMAIL": "demo.volunteer@example.com", "CREDIT_CARD": "4111 1111 1111 1111"}
#: What the scripted volunteer types (checked in the local store; only the secrets leave redacted).
DEMO_TEXT = f"echo mail {DEMO_SECRETS['EMAIL']} card {DEMO_SECRETS['CREDIT_CARD']}"
#: Title of the scripted volunteer's terminal.
DEMO_TERMINAL = "optin demo terminal"
#: The demo study's task, and the GTK form the volunteer fills in during it.
DEMO_TASK = "sign-in"
DEMO_TASKS = f"""
[tasks]
mode = "list"

[[task]]
id = "{DEMO_TASK}"
instruction = "Type the demo line in the terminal, then give your name in the sign-in form."
"""
DEMO_FORM = "optin demo sign-in"
DEMO_NAME = "Ada"

#: Time allowed for the agent to start or stop.
AGENT_TIMEOUT_S = 20.0


class DemoFailed(OptinError):
    """A link of the demo chain failed."""


def run_demo(seconds: float = 8.0, *, progress: bool = True, keep: Path | None = None) -> dict[str, Any]:
    """Run the demo; return the summary (see :func:`render_summary`).

    SIGTERM and SIGHUP end it like Ctrl-C: every process it started is stopped
    and its temporary directory (keys, session, bundle) removed.

    :param keep: an absent or empty folder that receives the bundle, the study file and the
        study's identity (``--keep``), e.g. to try ``optin dataset build`` on a real recording.
    """
    if seconds < 1 or seconds > 600:
        msg = f"--seconds {seconds:g} is out of range; use a value between 1 and 600"
        raise DemoFailed(msg)
    if keep is not None and keep.exists() and (not keep.is_dir() or any(keep.iterdir())):
        msg = f"--keep {keep} is not an empty folder. Fix: give a new folder (the demo creates it)"
        raise UsageError(msg)
    if shutil.which("age") is None:
        msg = (
            "the demo decrypts its bundle with the `age` command, which is not installed. "
            "Fix: apt-get install age"
        )
        raise EnvironmentProblem(msg)
    say = _progress if progress else (lambda _m: None)
    t0 = time.monotonic()
    with _exit_on_signals():
        work = Path(tempfile.mkdtemp(prefix="optin-demo-"))
        try:
            with _link("start the private display"), VirtualDisplay(adopt_daemons=True) as vd:
                say(f"private display {vd.display} with openbox, dunst and trayer is up")
                summary = _run_on(vd, work, seconds, say)
            if keep is not None:
                summary["kept"] = _keep(work, keep)
                say(f"bundle, study file and study identity kept in {keep}")
        finally:
            shutil.rmtree(work, ignore_errors=True)
    summary["seconds_taken"] = round(time.monotonic() - t0, 1)
    return summary


def _keep(work: Path, keep: Path) -> dict[str, str]:
    """Copy the bundle, the study file and the study identity into ``keep`` (0700; files 0600)."""
    keep.mkdir(mode=0o700, parents=True, exist_ok=True)
    kept: dict[str, str] = {}
    for bundle in sorted((work / "out").glob("*.optin.tar.age")):
        write_private_file(keep / bundle.name, bundle.read_bytes())
        kept["bundle"] = str(keep / bundle.name)
    for name, role in (("demo-study.toml", "study"), ("study-identity.txt", "identity")):
        write_private_file(keep / name, (work / name).read_bytes())
        kept[role] = str(keep / name)
    return kept


@contextlib.contextmanager
def _exit_on_signals() -> Iterator[None]:
    """Turn SIGTERM/SIGHUP into SystemExit so cleanup runs (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def leave(signum: int, _frame: object) -> None:
        raise SystemExit(128 + signum)

    saved = {sig: signal.signal(sig, leave) for sig in TERMINATE_SIGNALS}
    try:
        yield
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)


@contextlib.contextmanager
def _link(name: str) -> Iterator[None]:
    """Name the link of the chain that failed, in one line."""
    try:
        yield
    except DemoFailed:
        raise
    except OptinError as exc:
        msg = f"{name}: {exc}"
        raise DemoFailed(msg) from exc
    except subprocess.TimeoutExpired as exc:
        msg = f"{name}: no answer within {exc.timeout:g} s"
        raise DemoFailed(msg) from exc
    except (OSError, ValueError, KeyError, IndexError) as exc:
        msg = f"{name}: {type(exc).__name__}: {exc}"
        raise DemoFailed(msg) from exc


def agent_env(vd: VirtualDisplay, work: Path) -> dict[str, str]:
    """The environment of an agent that runs on ``vd`` with its home in ``work/home``: a throwaway
    identity, passphrase-wrapped in ``work`` (never the volunteer's OS keyring), the xorg backend."""
    passphrase_file = work / "passphrase.txt"
    write_private_file(passphrase_file, (secrets.token_urlsafe(24) + "\n").encode("ascii"))
    env = dict(
        vd.env,
        OPTIN_HOME=str(work / "home"),
        OPTIN_LOG_LEVEL="WARNING",
        OPTIN_PASSPHRASE_FILE=str(passphrase_file),
        PYTHON_KEYRING_BACKEND="keyring.backends.fail.Keyring",
    )
    env.pop("OPTIN_BACKEND", None)
    env.pop("OPTIN_NEW_PASSPHRASE_FILE", None)
    return env


def _run_on(vd: VirtualDisplay, work: Path, seconds: float, say: Callable[[str], None]) -> dict[str, Any]:
    from pyrage import x25519

    from agent.study import demo_study_toml, parse_study

    env = agent_env(vd, work)
    with _link("make the demo study"):
        study_identity = x25519.Identity.generate()
        identity_file = work / "study-identity.txt"
        write_private_file(identity_file, (str(study_identity) + "\n").encode())
        study_text = demo_study_toml(str(study_identity.to_public())) + DEMO_TASKS
        study_file = work / "demo-study.toml"
        write_private_file(study_file, study_text.encode())
    with _link("grant consent"):
        consent_hash = parse_study(study_text).terms_sha256  # what `optin consent show` prints
        _optin(env, "consent", "grant", "--study", str(study_file), "--accept-text-sha256", consent_hash)
    say("demo study installed and consent granted")

    log = work / "agent-stderr.log"
    with _link("start the agent"), log.open("wb") as err:
        agent = vd.spawn(optin_command("run"), env=env, stdout=True, stderr=err)
    with _link("start the agent"):
        session_id = _await_recording(agent, log)
    say(f"agent recording session {session_id} (tray icon shown)")
    with _link("start the study's task"):
        session_id = json.loads(_optin(env, "task", "start", "--id", DEMO_TASK, "--json"))["session"]
    say(f"task {DEMO_TASK} started: its own session {session_id}")
    with _link("drive the scripted volunteer"):
        script = _drive_volunteer(vd, seconds)
        script["form"] = _fill_form(vd)
    with _link("end the task"):
        _optin(env, "task", "done")
    say(
        f"scripted volunteer done: {script['clicks']} clicks, {script['scrolls']} scrolls, typed text, "
        "filled a form; task done"
    )
    with _link("stop the agent"):
        end_process_group(agent.pid)
        rc = agent.wait(AGENT_TIMEOUT_S)
    if rc != 0:
        msg = f"stop the agent: it exited with code {rc} after SIGTERM: {_tail(log)}"
        raise DemoFailed(msg)
    say("agent stopped; session sealed")

    with _link("export the session"):
        out = _optin(env, "export", session_id, "--out", str(work / "out"), "--approve", "--json")
        exported = json.loads(out)[0]
    say(f"exported {Path(exported['path']).name} ({exported['bytes']} bytes)")
    with _link("decrypt and check the bundle"):
        summary = _check(
            env,
            work=work,
            session_id=session_id,
            bundle=Path(exported["path"]),
            identity_file=identity_file,
            vd=vd,
            script=script,
        )
    say("bundle decrypted with `age -d`, checked, and verified by `optin inspect`")
    return summary


def _optin(env: dict[str, str], *args: str) -> str:
    out = subprocess.run(
        optin_command(*args),
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if out.returncode != 0:
        msg = f"`optin {args[0]}` failed (exit {out.returncode}): {out.stderr.strip()}"
        raise DemoFailed(msg)
    return out.stdout


def _await_recording(agent: subprocess.Popen[bytes], log: Path) -> str:
    if agent.stdout is None:
        msg = "the agent has no output pipe"
        raise DemoFailed(msg)
    ready, _, _ = select.select([agent.stdout], [], [], AGENT_TIMEOUT_S)
    line = agent.stdout.readline().decode().strip() if ready else ""
    prefix = "optin: recording session "
    if not line.startswith(prefix):
        with contextlib.suppress(subprocess.TimeoutExpired):
            agent.wait(2.0)
        msg = f"the agent did not start recording: {_tail(log) or line or 'no output'}"
        raise DemoFailed(msg)
    return line[len(prefix) :]


def _tail(log: Path) -> str:
    """The end of the agent's stderr (log lines carry no captured content)."""
    try:
        return log.read_text(errors="replace").strip()[-500:]
    except OSError:
        return ""


def _drive_volunteer(vd: VirtualDisplay, seconds: float) -> dict[str, Any]:
    """Open an xterm and act in it for about ``seconds``; return what was done."""
    vd.spawn(
        ["xterm", "-T", DEMO_TERMINAL, "-fa", "DejaVu Sans Mono", "-fs", "12", "-geometry", "90x24+40+60"]
    )
    if not wait_for(lambda: bool(vd.search(DEMO_TERMINAL)), 10.0):
        msg = "the demo xterm did not appear"
        raise DemoFailed(msg)
    vd.xdotool("windowactivate", "--sync", vd.search(DEMO_TERMINAL)[0])
    clicks = scrolls = 0
    vd.xdotool("mousemove", "--sync", "300", "300")
    vd.xdotool("click", "1")
    clicks += 1
    vd.xdotool("type", "--delay", "20", DEMO_TEXT)
    vd.xdotool("key", "Return")
    end = time.monotonic() + max(0.0, seconds - 2.0)
    positions = [(200, 200), (500, 350), (700, 250), (400, 450)]
    i = 0
    while True:
        x, y = positions[i % len(positions)]
        vd.xdotool("mousemove", "--sync", str(x), str(y))
        vd.xdotool("click", "1")
        clicks += 1
        vd.xdotool("click", "5")
        vd.xdotool("click", "4")
        scrolls += 2
        i += 1
        if time.monotonic() >= end and i >= 3:
            break
        time.sleep(0.3)
    time.sleep(0.5)  # let the last frame be grabbed
    return {"clicks": clicks, "scrolls": scrolls, "typed": DEMO_TEXT}


def _fill_form(vd: VirtualDisplay) -> bool:
    """A GTK 3 form (zenity) on the accessibility bus: click into its entry and type a name; False
    when zenity is missing (the demo then has no element of a form to show)."""
    if shutil.which("zenity") is None:
        return False
    env = {k: v for k, v in vd.env.items() if k != "NO_AT_BRIDGE"}  # the form joins the bus
    form = vd.spawn(["zenity", "--entry", "--title", DEMO_FORM, "--text", "Your name"], env=env)
    if not wait_for(lambda: bool(vd.search(DEMO_FORM)), 10.0):
        msg = "the demo's sign-in form did not appear"
        raise DemoFailed(msg)
    window = vd.search(DEMO_FORM)[0]
    vd.xdotool("windowactivate", "--sync", window)
    time.sleep(0.5)
    geometry = dict(kv.split("=") for kv in vd.xdotool("getwindowgeometry", "--shell", window).split())
    x, y, h = int(geometry["X"]), int(geometry["Y"]), int(geometry["HEIGHT"])
    vd.xdotool("mousemove", "--sync", str(x + int(geometry["WIDTH"]) // 2), str(y + h // 2))  # the entry
    vd.xdotool("click", "1")
    time.sleep(0.3)
    vd.xdotool("type", "--delay", "40", DEMO_NAME)
    time.sleep(0.3)
    vd.xdotool("key", "Return")  # zenity answers and closes
    with contextlib.suppress(subprocess.TimeoutExpired):
        form.wait(5.0)
    time.sleep(0.5)
    return True


def _check(
    env: dict[str, str],
    *,
    work: Path,
    session_id: str,
    bundle: Path,
    identity_file: Path,
    vd: VirtualDisplay,
    script: dict[str, Any],
) -> dict[str, Any]:
    out = subprocess.run(
        ["age", "-d", "-i", str(identity_file), str(bundle)], capture_output=True, timeout=60, check=False
    )
    if out.returncode != 0:
        msg = f"`age -d` could not decrypt the bundle: {out.stderr.decode(errors='replace').strip()}"
        raise DemoFailed(msg)
    inspected = json.loads(_optin(env, "inspect", str(bundle), "--identity", str(identity_file), "--json"))
    members = _tar_members(out.stdout)
    manifest = json.loads(members["manifest.json"])
    counts: dict[str, int] = manifest["counts"]
    flat = "".join(c for c in out.stdout.decode("latin-1") if c.isalnum())
    for name, secret in DEMO_SECRETS.items():
        if secret.encode() in out.stdout or "".join(c for c in secret if c.isalnum()) in flat:
            msg = f"the typed {name} appears in the exported bundle: redaction failed"
            raise DemoFailed(msg)
    redaction = manifest["redaction"]["counts"]
    problems = _expectations(counts, script)
    if set(redaction.get("typed", {})) != set(DEMO_SECRETS):
        problems.append(
            f"typed text redacted as {sorted(redaction.get('typed', {}))}, not {sorted(DEMO_SECRETS)}"
        )
    if not redaction.get("screen"):
        problems.append("OCR masked nothing, though the secrets were on screen")
    kept = "".join(
        e.get("char") or ""
        for e in map(json.loads, members["events.jsonl"].decode().splitlines())
        if e["k"] == "key_press"
    )
    if not kept.startswith("echomail"):
        problems.append("the typed words around the secrets did not survive redaction")
    frames = [json.loads(line) for line in members["frames.jsonl"].decode().splitlines() if line]
    if any((f["width"], f["height"]) != (vd.width, vd.height) for f in frames):
        problems.append("a frame does not have the display's size")
    typed = _typed_in_store(env, session_id)
    if DEMO_TEXT not in typed:
        problems.append("the local store does not hold exactly the typed text")
    if inspected.get("signature") != "valid" or inspected["steps"]["count"] < script["clicks"]:
        problems.append("`optin inspect` did not find a signed bundle with a step per click")
    tasks = manifest.get("tasks") or []
    if [(t["id"], t["outcome"]) for t in tasks] != [(DEMO_TASK, "done")]:
        problems.append(
            f"the bundle's tasks are {[(t['id'], t['outcome']) for t in tasks]}, not the task done"
        )
    steps = [json.loads(members[n]) for n in sorted(members) if n[:6].isdigit() and n.endswith(".json")]
    elements = [s["element"] for s in steps if s.get("element")]
    shown = next((e for e in elements if e["role"] in ("text", "entry")), None)
    if script.get("form") and shown is None:
        problems.append("no step has the form's text field as its element (AT-SPI)")
    if problems:
        raise DemoFailed("demo checks failed: " + "; ".join(problems))
    stored = sum(p.stat().st_size for p in (work / "home" / "data" / "sessions" / session_id).glob("*"))
    return {
        "session": session_id,
        "display": f"{vd.width}x{vd.height}",
        "events_by_kind": counts,
        "frames": counts.get("frame", 0),
        "bytes_stored": stored,
        "bundle_bytes": bundle.stat().st_size,
        "bundle_members": len(members),
        "steps": inspected["steps"],
        "task": {"id": DEMO_TASK, "outcome": tasks[0]["outcome"], "steps": tasks[0]["steps"]["count"]},
        "elements": {
            "api": manifest["elements"]["api"],
            "steps_with": len(elements),
            "example": _element_words(shown) if shown else None,
            "lookups": {
                k: v for k, v in (manifest["loss"].get("elements") or {}).items() if k != "steps_without"
            },
        },
        "redaction": manifest["redaction"]["counts"],
        "loss": {k: v for k, v in manifest["loss"].items() if k not in ("store_problems", "elements")},
        "checks": "passed",
    }


def _element_words(element: dict[str, Any]) -> str:
    """``text "Your name" in dialog "optin demo sign-in"``: a step's element in words (the demo's own)."""
    words = str(element["role"]) + (f" {element['name']!r}" if element.get("name") else "")
    window = next((p for p in element.get("path") or [] if p.get("name")), None)
    return words + (f" in {window['role']} {window['name']!r}" if window else "")


def _tar_members(tar_bytes: bytes) -> dict[str, bytes]:
    """The members of a decrypted bundle by name within the session directory (checked by inspect)."""
    import io
    import tarfile

    with tarfile.open(fileobj=io.BytesIO(tar_bytes)) as tar:
        return {
            m.name.split("/", 1)[-1]: f.read()
            for m in tar.getmembers()
            if m.isfile() and (f := tar.extractfile(m)) is not None
        }


def _expectations(counts: dict[str, int], script: dict[str, Any]) -> list[str]:
    problems = []
    if counts.get("button_press", 0) < script["clicks"]:
        problems.append(f"{counts.get('button_press', 0)} button presses stored, {script['clicks']} made")
    presses = counts.get("key_press", 0) + counts.get("redacted", 0)
    if presses < len(script["typed"]) - sum(len(s) for s in DEMO_SECRETS.values()):
        problems.append(f"{presses} key presses exported, {len(script['typed'])} typed")
    if counts.get("scroll", 0) < script["scrolls"]:
        problems.append(f"{counts.get('scroll', 0)} scrolls stored, {script['scrolls']} made")
    if counts.get("frame", 0) < 2:
        problems.append("fewer than 2 frames stored")
    if counts.get("window_focus", 0) < 1:
        problems.append("no focus change stored")
    return problems


def _typed_in_store(env: dict[str, str], session_id: str) -> str:
    """Decrypt the local session with the volunteer's key; return the typed characters."""
    from agent.paths import dirs
    from agent.store import keys
    from agent.store.reader import read_session

    names = ("OPTIN_HOME", keys.PASSPHRASE_FILE_ENV)
    saved = {name: os.environ.get(name) for name in names}
    os.environ.update({name: env[name] for name in names})  # unlock exactly as the demo's commands do
    try:
        d = dirs()
        data = read_session(d, session_id, keys.load_identity(d))
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
    return "".join(
        e.char or (" " if e.name == "space" else "") for e in data.events if isinstance(e, KeyPress)
    )


def _progress(message: str) -> None:
    print(f"demo: {message}", file=sys.stderr, flush=True)


def render_summary(summary: dict[str, Any]) -> str:
    """The summary as text."""
    return "\n".join(
        [
            f"optin demo: all checks passed in {summary['seconds_taken']} s",
            f"  session        {summary['session']} on a {summary['display']} private display",
            f"  events         {pairs_text(summary['events_by_kind'])}",
            f"  frames         {summary['frames']}",
            f"  steps          {summary['steps']['count']} ({pairs_text(summary['steps']['by_action'])})",
            f"  task           {summary['task']['id']}: {summary['task']['outcome']}, "
            f"{summary['task']['steps']} steps",
            f"  elements       {summary['elements']['steps_with']} steps with their UI element "
            f"({summary['elements']['api'] or 'no lookups'})"
            + (f", e.g. {summary['elements']['example']}" if summary["elements"]["example"] else "")
            + f"; lookups: {pairs_text(summary['elements']['lookups'])}",
            f"  loss           {pairs_text(summary['loss'])}",
            f"  stored         {summary['bytes_stored']} bytes, encrypted",
            f"  bundle         {summary['bundle_bytes']} bytes, {summary['bundle_members']} members, "
            "decrypted with `age -d`, signature and hashes checked by `optin inspect`",
            f"  redacted       {redactions_by_place(summary['redaction'])}",
        ]
    )
