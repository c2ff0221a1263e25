"""P7: the recorder has no network code.  Every module of the package is read (not imported) and
its imports and socket uses checked against a short list of allowed, explained exceptions.

Delivery to the study is a separate command the volunteer starts, ``optin upload``: its network code
lives in ``agent/upload/`` alone (:data:`NETWORK_ALLOWED`), and nothing ``optin run`` loads reaches it.

The study side (``agent/dataset/``: ``optin dataset``, run by a study on its own machines) talks to S3
and Ray through the ``study`` extra.  It is the one place those libraries may be imported, and nothing
``optin run`` loads reaches it: checked from the source (every import the recorder could execute) and
by loading the recorder's modules in a fresh interpreter."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

AGENT = Path(__file__).resolve().parents[2] / "agent"
REPO = AGENT.parent

#: Modules that speak network protocols or reach the internet.
NETWORK_MODULES = {
    "http",
    "urllib",
    "urllib3",
    "requests",
    "httpx",
    "aiohttp",
    "ssl",
    "ftplib",
    "smtplib",
    "poplib",
    "imaplib",
    "telnetlib",
    "xmlrpc",
    "socketserver",
    "websocket",
    "websockets",
    "asyncio",
    "webbrowser",
    "paramiko",
    "grpc",
    "zeroconf",
}
#: Where ``socket`` may be imported, and why.
SOCKET_ALLOWED = {
    "ipc.py": "the control socket: AF_UNIX only, 0600, peer uid checked",
    "ipc_client.py": "the command line's end of the control socket (its AF_UNIX socket: platform_calls)",
    "backends/platform_calls.py": "the control socket's per-OS calls: its AF_UNIX socket, the peer's uid",
    "backends/xorg/connection.py": (
        "a timeout probe of the X display DISPLAY names, as python-xlib then connects"
    ),
    "redact/local_names.py": "socket.gethostname(), to redact this computer's name from exports",
}


def _modules() -> list[tuple[str, ast.Module]]:
    return [
        (str(p.relative_to(AGENT)), ast.parse(p.read_text(encoding="utf-8"))) for p in AGENT.rglob("*.py")
    ]


def _imports(tree: ast.Module) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module.split(".")[0])
    return found


#: Where a network library may be imported, which, and why.
NETWORK_ALLOWED = {
    "upload/": (
        frozenset({"http", "ssl"}),
        "optin upload: an explicit command the volunteer starts; HTTPS to the study's intake (or http to "
        "this computer) with certificates checked; never loaded by optin run (tested below)",
    ),
}


def _allowed_network(name: str) -> frozenset[str]:
    return next(
        (libs for folder, (libs, _why) in NETWORK_ALLOWED.items() if name.startswith(folder)), frozenset()
    )


def test_no_module_imports_a_network_library() -> None:
    offenders = {
        name: sorted((_imports(tree) & NETWORK_MODULES) - _allowed_network(name)) for name, tree in _modules()
    }
    assert {k: v for k, v in offenders.items() if v} == {}


def test_the_upload_folder_is_where_the_network_code_is() -> None:
    """The allowance is used (a stale one would hide nothing, but say something untrue)."""
    users = {name for name, tree in _modules() if _imports(tree) & NETWORK_MODULES}
    assert users and all(name.startswith(tuple(NETWORK_ALLOWED)) for name in users), users


def test_sockets_only_where_allowed() -> None:
    users = {name for name, tree in _modules() if "socket" in _imports(tree)}
    assert users <= set(SOCKET_ALLOWED), users - set(SOCKET_ALLOWED)


def test_the_control_socket_is_unix_only_and_nothing_else_opens_internet_sockets() -> None:
    for name, tree in _modules():
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and node.attr in ("AF_INET", "AF_INET6"):
                assert name == "backends/xorg/connection.py", f"{name} opens an internet socket"
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr == "socket"
            ) and name in ("ipc.py", "ipc_client.py", "backends/platform_calls.py"):
                assert isinstance(node.args[0], ast.Attribute) and node.args[0].attr == "AF_UNIX"
    local = (AGENT / "redact" / "local_names.py").read_text(encoding="utf-8")
    assert "socket.gethostname()" in local and "socket.socket" not in local


#: The study side's libraries (the ``study`` extra): network clients (S3, Ray) and heavy readers.
STUDY_PACKAGES = {
    "boto3",
    "botocore",
    "s3transfer",
    "pyarrow",
    "ray",
    "webdataset",
    "duckdb",
    "matplotlib",
    "datasets",
    "fsspec",
    "tqdm",
    "starlette",
    "uvicorn",
    "anyio",
    "h11",
}
#: Where the study side lives: the only folder that may import :data:`STUDY_PACKAGES`.
STUDY_FOLDER = "dataset/"
#: What ``optin run`` loads: the command line's shell (imported whole: only its top-level imports run)
#: and the run command's module (every import in it, at the top or in a function, may run).
RUN_SHELL = ("agent.__main__", "agent.cli", "agent.cli.parser")
RUN_HANDLER = ("agent.cli.recording",)
#: Agent packages ``optin run`` must never load: the study side, and the upload command's network code.
NEVER_IN_RUN = ("agent.dataset", "agent.upload")


def _module_name(relative: str) -> str:
    parts = relative.removesuffix(".py").split("/")
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(["agent", *parts])


def _agent_imports(name: str, tree: ast.Module, *, top_level_only: bool) -> set[str]:
    """The ``agent...`` modules ``tree`` (module ``name``) imports: at its top level (and in top-level
    ``if``/``try`` blocks), or anywhere (function bodies too)."""
    nodes: list[ast.AST] = []
    if top_level_only:
        todo: list[ast.stmt] = list(tree.body)
        while todo:
            stmt = todo.pop()
            nodes.append(stmt)
            if isinstance(stmt, ast.If | ast.Try):
                todo.extend(stmt.body + stmt.orelse + getattr(stmt, "finalbody", []))
                for handler in getattr(stmt, "handlers", []):
                    todo.extend(handler.body)
    else:
        nodes = list(ast.walk(tree))
    package = (
        name if (AGENT / Path(*name.split(".")[1:]) / "__init__.py").exists() else name.rpartition(".")[0]
    )
    found: set[str] = set()
    for node in nodes:
        if isinstance(node, ast.If) and top_level_only and "TYPE_CHECKING" in ast.unparse(node.test):
            continue
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.split(".")[0] == "agent")
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                module = f"{base}.{node.module}" if node.module else base
            else:
                module = node.module or ""
            if module.split(".")[0] != "agent":
                continue
            found.add(module)
            found.update(f"{module}.{a.name}" for a in node.names)  # `from agent.x import y` (a module?)
    return found


def _closure_of_run() -> tuple[set[str], dict[str, set[str]]]:
    """Every agent module ``optin run`` can load, and each one's third-party imports (from the source)."""
    trees = {_module_name(rel): tree for rel, tree in _modules()}
    # modules reached only through the shell follow their top-level imports; the handler's, all of them
    mode: dict[str, bool] = {}
    todo = [(m, True) for m in RUN_SHELL] + [(m, False) for m in RUN_HANDLER]
    while todo:
        name, top = todo.pop()
        if name not in trees or mode.get(name) in (False, top):
            continue  # not a module (a name imported from one), or already walked at least as widely
        mode[name] = top
        parents = name.split(".")
        todo.extend((".".join(parents[:i]), True) for i in range(2, len(parents)))  # packages run first
        todo.extend((m, top) for m in _agent_imports(name, trees[name], top_level_only=top))
    third_party = {name: _imports(trees[name]) for name in mode}
    return set(mode), third_party


def test_only_the_study_side_imports_the_study_libraries() -> None:
    users = {
        name: sorted(_imports(tree) & STUDY_PACKAGES)
        for name, tree in _modules()
        if not name.startswith(STUDY_FOLDER)
    }
    assert {k: v for k, v in users.items() if v} == {}


def test_nothing_optin_run_loads_reaches_the_study_side() -> None:
    loaded, third_party = _closure_of_run()
    assert "agent.cli.recording" in loaded and "agent.control" in loaded  # the walk did reach the recorder
    assert (
        sorted(m for m in loaded if m in NEVER_IN_RUN or m.startswith(tuple(p + "." for p in NEVER_IN_RUN)))
        == []
    )
    assert {m: sorted(p & STUDY_PACKAGES) for m, p in third_party.items() if p & STUDY_PACKAGES} == {}
    assert {m: sorted(p & NETWORK_MODULES) for m, p in third_party.items() if p & NETWORK_MODULES} == {}


def test_the_recorder_s_modules_load_without_the_study_side() -> None:
    """Load what `optin run` loads in a fresh interpreter and look at ``sys.modules`` (catches a
    library that imports one of the study side's libraries behind our back)."""
    code = (
        "import sys\n"
        "import agent.cli.recording, agent.control, agent.backends, agent.ui.tray\n"
        "from agent.cli import build_parser\n"
        "build_parser().parse_args(['run'])\n"
        f"bad = sorted(m for m in sys.modules if m.split('.')[0] in {sorted(STUDY_PACKAGES)!r} "
        f"or m.split('.')[:2] in {[p.split('.') for p in NEVER_IN_RUN]!r} "
        "or m in ('http', 'http.client', 'ssl', 'asyncio'))\n"
        "print(bad)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "[]"
