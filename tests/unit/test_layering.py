"""The house's floors, read from the imports: every module of ``agent/`` is parsed (never imported)
and each ``import`` and ``from ... import`` in it checked against the layering rules of
docs/architecture.md ("Layering rules").

Every import counts for the rules, wherever it is written: at module level, inside a function (the
lazy imports that keep toolkits and backends optional) and under ``if TYPE_CHECKING:``, because a
lazy or type-only import is still a dependency of the module.  Import circles are looked for among
the imports that run (module level and function level); an import under ``if TYPE_CHECKING:`` never
runs and is the usual way to name a type from a module above, so it makes no circle.  A circle through
a function-level import is still one: the two modules each need the other, the lazy import only hides
it from the import system.

Each rule is a small function over the imports of a tree, so the tests below also run it over a tiny
synthetic tree with a planted violation and check that it is found.
"""

from __future__ import annotations

import ast
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

AGENT = Path(__file__).resolve().parents[2] / "agent"

#: GUI toolkits: only the views under agent/ui/ may import them.
TOOLKITS = ("tkinter", "_tkinter", "pystray", "gi", "PIL.ImageTk")
#: Modules outside agent/ui/ that may import a toolkit, and why: the X11 backend reaches AT-SPI and
#: its D-Bus switch only through GObject introspection (gi), with no GUI.  An entry is
#: ``"path/of/module.py": ("toolkit", "why it must")``.
TOOLKIT_EXCEPTIONS: dict[str, tuple[str, str]] = {
    "backends/xorg/a11y.py": (
        "gi",
        "AT-SPI (Atspi 2.0) is reachable only through GObject introspection; no GUI",
    ),
    "backends/xorg/a11y_bus.py": (
        "gi",
        "Gio D-Bus calls to org.a11y.Bus (IsEnabled, the doctor's questions); no GUI",
    ),
}

#: Cipher libraries: the store's format, identity file and signing modules are the only ones that
#: touch them.
CIPHERS = ("cryptography", "pyrage")
CIPHER_MODULES = ("store/format.py", "store/keyfile.py", "store/signing.py")
#: Other modules that import a cipher library, which one, and why (docs/architecture.md, "Where
#: the house rules bend").  None of them uses cryptography; they use age (pyrage), a complete
#: recipe, for the export file, which is not the local store.
CIPHER_EXCEPTIONS: dict[str, tuple[str, str]] = {
    "export/bundle.py": ("pyrage", "the export is an age file encrypted to the study's recipients"),
    "export/inspect.py": ("pyrage", "the collector opens that age file with the study's identity"),
    "demo.py": ("pyrage", "the demo generates a throwaway age identity for its study"),
    "study_check.py": (
        "pyrage",
        "a study's recipient is checked by parsing it as an age X25519 recipient (its checksum); "
        "nothing is encrypted",
    ),
}

#: Modules below capture: export works on stored data only, redaction and steps are pure over stored
#: records, the keyboard vocabulary is pure; none of them imports anything from agent/capture/.
BELOW_CAPTURE = ("steps.py", "redact/", "export/", "keyboard/")
#: The study side (the study file, its check and model, the TOML line finder, the deny rules it
#: states): it owns its deny-rule type and imports nothing from agent/capture/.
STUDY_SIDE = ("study.py", "study_model.py", "study_check.py", "toml_lines.py", "deny_rules.py")
CAPTURE = "agent.capture"

#: The recorder's own modules: capture reports up through what the recorder hands it (the event
#: sink, the loss counters) and the store is below the recorder, so neither imports these.
RECORDER = (
    "agent.recorder_status",
    "agent.recorder_states",
    "agent.control",
    "agent.recorder_sink",
    "agent.recorder_pauses",
    "agent.recorder_tasks",
    "agent.writer_loop",
)
BELOW_RECORDER = ("capture/", "store/")


@dataclass(frozen=True)
class Import:
    """One imported module, as one module of the tree imports it."""

    path: str  #: the importing module's path inside the tree, ``"capture/sources.py"``
    importer: str  #: its dotted name, ``"agent.capture.sources"``
    target: str  #: the module imported, absolute: ``"agent.capture.deny"``, ``"PIL.ImageTk"``
    line: int
    function_level: bool  #: written inside a function (runs when the function does)
    type_only: bool  #: written under ``if TYPE_CHECKING:`` (never runs)

    def where(self) -> str:
        kind = " (in a function)" if self.function_level else " (type only)" if self.type_only else ""
        return f"{self.path}:{self.line} imports {self.target}{kind}"


def module_name(root: Path, path: Path) -> str:
    """``agent/capture/__init__.py`` → ``agent.capture``; ``agent/study.py`` → ``agent.study``."""
    parts = [root.name, *path.relative_to(root).with_suffix("").parts]
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


class _Reader(ast.NodeVisitor):
    """Collects the imports of one module, knowing whether each is in a function or type-only."""

    def __init__(self, path: str, importer: str, package: str, known: frozenset[str]) -> None:
        self.path, self.importer, self.package, self.known = path, importer, package, known
        self.found: list[Import] = []
        self._functions = 0
        self._type_only = 0

    def _add(self, target: str, node: ast.stmt) -> None:
        self.found.append(
            Import(self.path, self.importer, target, node.lineno, self._functions > 0, self._type_only > 0)
        )

    def _function(self, node: ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda) -> None:
        self._functions += 1
        self.generic_visit(node)
        self._functions -= 1

    visit_FunctionDef = _function
    visit_AsyncFunctionDef = _function
    visit_Lambda = _function

    def visit_If(self, node: ast.If) -> None:
        if not _is_type_checking(node.test):
            self.generic_visit(node)
            return
        self._type_only += 1
        for child in node.body:
            self.visit(child)
        self._type_only -= 1
        for child in node.orelse:
            self.visit(child)

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            self._add(alias.name, node)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        base = node.module or ""
        if node.level:
            anchor = self.package.split(".")
            anchor = anchor[: len(anchor) - (node.level - 1)]
            base = ".".join([*anchor, *([node.module] if node.module else [])])
        root = self.importer.split(".")[0]
        inside = base == root or base.startswith(f"{root}.")
        for alias in node.names:
            # ``from agent.capture import deny`` imports the module agent.capture.deny, but
            # ``from agent.study import Study`` the module agent.study (Study is no module of the
            # tree).  Outside the tree the name is kept (``from PIL import ImageTk`` is PIL.ImageTk):
            # the rules match a module and everything inside it.
            sub = f"{base}.{alias.name}"
            self._add(sub if sub in self.known or not inside else base, node)


def read_imports(root: Path) -> list[Import]:
    """Every import of every module under ``root`` (a package folder such as ``agent/``), unexecuted."""
    files = sorted(root.rglob("*.py"))
    known = frozenset(module_name(root, p) for p in files)
    found: list[Import] = []
    for path in files:
        importer = module_name(root, path)
        package = importer if path.name == "__init__.py" else importer.rpartition(".")[0]
        reader = _Reader(path.relative_to(root).as_posix(), importer, package, known)
        reader.visit(ast.parse(path.read_text(encoding="utf-8"), filename=str(path)))
        found += reader.found
    return found


def _is(target: str, prefixes: Iterable[str]) -> str | None:
    """The prefix (a module or package name) that ``target`` is, or is inside of; None if none."""
    return next((p for p in prefixes if target == p or target.startswith(f"{p}.")), None)


def _under(path: str, places: Iterable[str]) -> bool:
    """Whether ``path`` is one of ``places`` (a file) or inside one of them (a folder ``x/``)."""
    return any(path == p or (p.endswith("/") and path.startswith(p)) for p in places)


# --- the rules: each returns what breaks it, one line per import -------------------------------------


def toolkit_violations(
    imports: Iterable[Import], exceptions: Mapping[str, tuple[str, str]] = TOOLKIT_EXCEPTIONS
) -> list[str]:
    """Toolkits imported outside agent/ui/ (and not an explained exception)."""
    out = []
    for imp in imports:
        toolkit = _is(imp.target, TOOLKITS)
        if toolkit is None or imp.path.startswith("ui/"):
            continue
        if imp.path in exceptions and exceptions[imp.path][0] == toolkit:
            continue
        out.append(f"{imp.where()}: a GUI toolkit below agent/ui/")
    return out


def cipher_violations(
    imports: Iterable[Import], exceptions: Mapping[str, tuple[str, str]] = CIPHER_EXCEPTIONS
) -> list[str]:
    """Cipher libraries imported outside the store's format, keyfile and signing modules."""
    out = []
    for imp in imports:
        library = _is(imp.target, CIPHERS)
        if library is None or imp.path in CIPHER_MODULES:
            continue
        if imp.path in exceptions and exceptions[imp.path][0] == library:
            continue
        out.append(f"{imp.where()}: ciphers only in {', '.join(CIPHER_MODULES)}")
    return out


def capture_violations(imports: Iterable[Import]) -> list[str]:
    """Steps, redaction, export and the keyboard vocabulary importing from agent/capture/."""
    return [
        f"{imp.where()}: steps, redact/, export/ and keyboard/ import nothing from agent/capture/"
        for imp in imports
        if _under(imp.path, BELOW_CAPTURE) and _is(imp.target, [CAPTURE])
    ]


def study_violations(imports: Iterable[Import]) -> list[str]:
    """The study side importing from agent/capture/ (its deny-rule type included)."""
    return [
        f"{imp.where()}: the study side owns its deny-rule type (agent.deny_rules), not capture"
        for imp in imports
        if _under(imp.path, STUDY_SIDE) and _is(imp.target, [CAPTURE])
    ]


def recorder_violations(imports: Iterable[Import]) -> list[str]:
    """Capture and the store importing the recorder's modules (its status module included)."""
    return [
        f"{imp.where()}: capture reports up through its sink and the store is below the recorder"
        for imp in imports
        if _under(imp.path, BELOW_RECORDER) and _is(imp.target, RECORDER)
    ]


def import_graph(imports: Iterable[Import]) -> dict[str, set[str]]:
    """Module → the modules of the same tree it imports when it runs (no ``TYPE_CHECKING`` imports).

    An import of ``a.b.c`` is an edge to the longest of ``a.b.c``, ``a.b``, ``a`` that is a module
    of the tree; the parent packages Python imports on the way are not edges (a package importing its
    own modules is normal).
    """
    imports = list(imports)
    modules = {imp.importer for imp in imports}
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for imp in imports:
        if imp.type_only:
            continue
        target = imp.target
        while target and target not in modules:
            target = target.rpartition(".")[0]
        if target and target != imp.importer:
            graph[imp.importer].add(target)
    return graph


def import_circles(graph: Mapping[str, set[str]]) -> list[list[str]]:
    """The groups of modules that import each other, directly or through others (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    circles: list[list[str]] = []
    for start in sorted(graph):
        if start in index:
            continue
        work: list[tuple[str, Iterator[str]]] = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, edges = work[-1]
            step = next(edges, None)
            if step is not None:
                if step not in index:
                    index[step] = low[step] = len(index)
                    stack.append(step)
                    on_stack.add(step)
                    work.append((step, iter(sorted(graph.get(step, ())))))
                elif step in on_stack:
                    low[node] = min(low[node], index[step])
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                group = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    group.append(member)
                    if member == node:
                        break
                if len(group) > 1:
                    circles.append(sorted(group))
    return sorted(circles)


# --- the real tree ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def imports() -> list[Import]:
    return read_imports(AGENT)


def test_the_reader_sees_module_function_and_type_only_imports(imports: list[Import]) -> None:
    """A reader that found nothing would pass every rule: it finds the imports known to be there."""
    assert len(imports) > 500
    seen = {(imp.path, imp.target, imp.function_level, imp.type_only) for imp in imports}
    assert ("capture/sources.py", "agent.capture.clipboard", False, False) in seen
    assert ("ui/tray.py", "pystray", True, False) in seen
    assert ("capture/__init__.py", "agent.capture.screen", False, True) in seen
    assert ("store/format.py", "cryptography.hazmat.primitives.ciphers.aead.AESGCM", False, False) in seen
    assert ("study.py", "agent.study_check", False, False) in seen


def test_no_gui_toolkit_below_ui(imports: list[Import]) -> None:
    assert toolkit_violations(imports) == []


def test_ciphers_only_in_the_store_format_keyfile_and_signing_modules(imports: list[Import]) -> None:
    assert cipher_violations(imports) == []


def test_steps_redact_export_and_keyboard_import_nothing_from_capture(imports: list[Import]) -> None:
    assert capture_violations(imports) == []


def test_the_study_owns_its_deny_rule_type(imports: list[Import]) -> None:
    assert study_violations(imports) == []
    study_side = {imp.target for imp in imports if imp.path in ("study_model.py", "study_check.py")}
    assert "agent.deny_rules" in study_side


def test_capture_and_the_store_do_not_import_the_recorder(imports: list[Import]) -> None:
    assert recorder_violations(imports) == []


def circle_imports(imports: Iterable[Import], circle: Sequence[str]) -> list[str]:
    """The imports that tie the modules of ``circle`` to each other, for the failure message."""
    members = set(circle)
    found = [
        imp.where()
        for imp in imports
        if imp.importer in members and not imp.type_only and _is(imp.target, members - {imp.importer})
    ]
    return list(dict.fromkeys(found))


def test_no_import_circles(imports: list[Import]) -> None:
    circles = import_circles(import_graph(imports))
    assert circles == [], [circle_imports(imports, circle) for circle in circles]


@pytest.mark.parametrize(
    ("exceptions", "libraries"), [(TOOLKIT_EXCEPTIONS, TOOLKITS), (CIPHER_EXCEPTIONS, CIPHERS)]
)
def test_every_exception_is_still_needed(
    imports: list[Import], exceptions: Mapping[str, tuple[str, str]], libraries: Sequence[str]
) -> None:
    """An excused module that no longer imports what it is excused for is a stale excuse."""
    for path, (library, why) in exceptions.items():
        assert library in libraries and why, path
        assert any(imp.path == path and _is(imp.target, [library]) for imp in imports), (
            f"{path} no longer imports {library}: remove its exception"
        )


# --- each rule finds a planted violation -------------------------------------------------------------


def plant(tmp_path: Path, files: Mapping[str, str]) -> list[Import]:
    """A tree ``tmp_path/agent`` holding ``files`` (path → source) and empty packages; its imports."""
    root = tmp_path / "agent"
    for name, source in {"__init__.py": "", **files}.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        for folder in path.relative_to(root).parents:
            (root / folder / "__init__.py").touch()
        path.write_text(source, encoding="utf-8")
    return read_imports(root)


CLEAN = {
    "ui/view.py": "import tkinter\nfrom PIL import ImageTk\n",
    "store/format.py": "from cryptography.hazmat.primitives.ciphers.aead import AESGCM\n",
    "capture/deny.py": "from agent.deny_rules import DenyRule\n",
    "deny_rules.py": "import re\n",
    "study.py": "from agent.deny_rules import DenyRule\n",
    "steps.py": "from agent.events import Event\n",
    "events.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from agent.steps import Step\n",
    "recorder_status.py": "from agent.store import format\n",
    "export/bundle.py": "def encrypt() -> None:\n    from pyrage import encrypt\n",
}

#: (rule, the file planted into the clean tree, its source).
PLANTED = [
    pytest.param(toolkit_violations, "capture/screen.py", "import tkinter\n", id="toolkit"),
    pytest.param(
        toolkit_violations, "backends/x.py", "def f() -> None:\n    import pystray\n", id="toolkit-lazy"
    ),
    pytest.param(toolkit_violations, "store/x.py", "from PIL import ImageTk\n", id="toolkit-imagetk"),
    pytest.param(toolkit_violations, "export/x.py", "import PIL.ImageTk\n", id="toolkit-imagetk-dotted"),
    pytest.param(toolkit_violations, "doctor.py", "from gi.repository import Gtk\n", id="toolkit-gi"),
    pytest.param(cipher_violations, "store/keys.py", "from cryptography.fernet import Fernet\n", id="cipher"),
    pytest.param(cipher_violations, "export/bundle.py", "import cryptography\n", id="cipher-not-excused"),
    pytest.param(cipher_violations, "ui/x.py", "def f() -> None:\n    import pyrage\n", id="cipher-lazy"),
    pytest.param(capture_violations, "steps.py", "from agent.capture import clipboard\n", id="steps"),
    pytest.param(capture_violations, "redact/text.py", "from agent.capture.input import X\n", id="redact"),
    pytest.param(
        capture_violations,
        "export/x.py",
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from agent.capture.screen import Shot\n",
        id="export-type-only",
    ),
    pytest.param(capture_violations, "redact/screen.py", "from ..capture import screen\n", id="relative"),
    pytest.param(study_violations, "study.py", "from agent.capture.deny import DenyRule\n", id="study"),
    pytest.param(study_violations, "study_check.py", "from agent.capture import deny\n", id="study-check"),
    pytest.param(
        recorder_violations,
        "capture/x.py",
        "from agent.recorder_status import Counters\n",
        id="capture-status",
    ),
    pytest.param(recorder_violations, "store/x.py", "from agent import recorder_status\n", id="store-status"),
    pytest.param(
        recorder_violations,
        "store/y.py",
        "def f() -> None:\n    import agent.control\n",
        id="store-recorder-lazy",
    ),
]


@pytest.mark.parametrize(("rule", "path", "source"), PLANTED)
def test_each_rule_finds_a_planted_violation(
    tmp_path: Path, rule: Callable[[list[Import]], list[str]], path: str, source: str
) -> None:
    clean = plant(tmp_path / "clean", CLEAN)
    assert rule(clean) == []
    found = rule(plant(tmp_path / "planted", {**CLEAN, path: source}))
    assert len(found) == 1 and found[0].startswith(f"{path}:"), found


def test_an_exception_excuses_only_its_module_and_library(tmp_path: Path) -> None:
    tree = plant(tmp_path, {**CLEAN, "backends/tray.py": "import gi\nimport pystray\n"})
    excused = {"backends/tray.py": ("gi", "a backend that truly must")}
    assert toolkit_violations(tree, excused) == [
        "backends/tray.py:2 imports pystray: a GUI toolkit below agent/ui/"
    ]


@pytest.mark.parametrize(
    ("files", "circle"),
    [
        pytest.param(
            {"a.py": "import agent.b\n", "b.py": "from agent import a\n"}, ["agent.a", "agent.b"], id="two"
        ),
        pytest.param(
            {
                "a.py": "from agent.b import x\n",
                "b.py": "from agent.c import y\n",
                "c.py": "import agent.a\n",
            },
            ["agent.a", "agent.b", "agent.c"],
            id="three",
        ),
        pytest.param(
            {"a.py": "import agent.b\n", "b.py": "def f() -> None:\n    from agent.a import g\n"},
            ["agent.a", "agent.b"],
            id="through-a-function",
        ),
        pytest.param(
            {"p/__init__.py": "from agent.p.q import X\n", "p/q.py": "from agent.p import Y\n"},
            ["agent.p", "agent.p.q"],
            id="package-and-its-module",
        ),
    ],
)
def test_a_planted_circle_is_found(tmp_path: Path, files: dict[str, str], circle: list[str]) -> None:
    assert import_circles(import_graph(plant(tmp_path, {**CLEAN, **files}))) == [circle]


def test_type_only_imports_and_a_package_importing_its_modules_make_no_circle(tmp_path: Path) -> None:
    tree = plant(
        tmp_path,
        {
            **CLEAN,  # events.py names agent.steps under TYPE_CHECKING, steps.py imports agent.events
            "p/__init__.py": "from agent.p.q import X\n",
            "p/q.py": "from agent.events import Event\n",
        },
    )
    graph = import_graph(tree)
    assert "agent.events" in graph["agent.steps"] and "agent.p.q" in graph["agent.p"]
    assert import_circles(graph) == []
