"""P: the agent has no network code.  Every module of the package is read (not imported) and
its imports and socket uses checked against a short list of allowed, explained exceptions."""

from __future__ import annotations

import ast
from pathlib import Path

AGENT = Path(__file__).resolve().parents[2] / "agent"

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


def test_no_module_imports_a_network_library() -> None:
    offenders = {name: sorted(_imports(tree) & NETWORK_MODULES) for name, tree in _modules()}
    assert {k: v for k, v in offenders.items() if v} == {}


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
