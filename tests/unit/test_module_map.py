"""docs/architecture.md's module table names every module under agent/, and only modules that exist.

How the table names a module (the rules are stated above the table too):

* the first cell of a row holds paths in backticks: a full path (```agent/capture/input.py```), or a
  bare name after one (```screen.py```), which is in the same folder as the full path before it in
  that cell; a path ending in ``/`` (```agent/keyboard/```) names a package;
* in the role cell, bare names in backticks ending in ``.py`` (```names.py```, ```xorg/focus.py```)
  are modules of the folder of the row's first path (the package of a package row);
* full ``agent/...py`` paths anywhere in the table are references and must exist, but do not list
  a module (a role may point at another row's module).

Every ``.py`` file under agent/ is a module that must be listed, except a package's ``__init__.py``
that only marks the package: one that holds nothing but a docstring, imports and dunder names
(``__all__``, ``__version__``).  An ``__init__.py`` that defines anything (a class, a function, a
constant) is a module like the others and is listed as ``__init__.py``.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

_CODE = re.compile(r"`([^`]+)`")
_BARE = re.compile(r"[\w/]+\.py")


def table_rows(markdown: str) -> list[tuple[str, str]]:
    """The (first cell, role) of each row of the first table under ``## Modules``."""
    lines = markdown.splitlines()
    start = lines.index("## Modules")
    rows: list[tuple[str, str]] = []
    for line in lines[start + 1 :]:
        if line.startswith("## "):
            break
        if not line.startswith("|"):
            if rows:
                break
            continue
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) < 2 or set(cells[0]) <= {"-", ":", " "} or cells[0] == "module":
            continue
        rows.append((cells[0], "|".join(cells[1:])))
    return rows


def listed_modules(markdown: str) -> tuple[set[str], set[str]]:
    """The modules the table lists, and every ``agent/...py`` path it names (as ``agent/x/y.py``)."""
    listed: set[str] = set()
    referenced: set[str] = set()
    for first, role in table_rows(markdown):
        folder: str | None = None
        row_folder: str | None = None
        for token in _CODE.findall(first):
            if token.startswith("agent/"):
                folder = token if token.endswith("/") else token.rpartition("/")[0] + "/"
                row_folder = row_folder or folder
                if token.endswith(".py"):
                    listed.add(token)
            elif _BARE.fullmatch(token):
                if folder is None:
                    msg = f"{token!r} in the module table follows no agent/ path in its cell: {first}"
                    raise AssertionError(msg)
                listed.add(folder + token)
        for token in _CODE.findall(role):
            if token.startswith("agent/") and token.endswith(".py"):
                referenced.add(token)
            elif _BARE.fullmatch(token) and row_folder is not None:
                listed.add(row_folder + token)
    return listed, listed | referenced


def _marks_a_package_only(source: str) -> bool:
    """A docstring, imports and dunder names (``__all__``, ``__version__``), nothing else."""
    for node in ast.parse(source).body:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            continue
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant):
            continue
        targets = (
            node.targets
            if isinstance(node, ast.Assign)
            else [node.target]
            if isinstance(node, ast.AnnAssign)
            else []
        )
        if targets and all(isinstance(t, ast.Name) and t.id.startswith("__") for t in targets):
            continue
        return False
    return True


def modules_on_disk(root: Path) -> set[str]:
    """Every module under ``root/agent`` as ``agent/x/y.py`` (package markers left out)."""
    found = set()
    for path in (root / "agent").rglob("*.py"):
        if path.name == "__init__.py" and _marks_a_package_only(path.read_text(encoding="utf-8")):
            continue
        found.add(path.relative_to(root).as_posix())
    return found


def map_problems(root: Path) -> list[str]:
    """What is wrong between ``root/docs/architecture.md``'s module table and ``root/agent``."""
    listed, named = listed_modules((root / "docs" / "architecture.md").read_text(encoding="utf-8"))
    on_disk = modules_on_disk(root)
    exists = {p.relative_to(root).as_posix() for p in (root / "agent").rglob("*.py")}
    problems = [f"{m} is not in docs/architecture.md's module table" for m in sorted(on_disk - listed)]
    problems += [f"docs/architecture.md names {m}, which does not exist" for m in sorted(named - exists)]
    return problems


def test_the_module_table_lists_every_module_and_only_modules_that_exist() -> None:
    assert map_problems(ROOT) == []


def test_the_table_is_read() -> None:
    """A table the parser could not read would list nothing and pass nothing: it reads rows and modules."""
    listed, _ = listed_modules((ROOT / "docs" / "architecture.md").read_text(encoding="utf-8"))
    assert {"agent/study.py", "agent/capture/screen.py", "agent/keyboard/names.py"} <= listed
    assert len(listed) > 50


# --- the test fails when the tree and the table disagree --------------------------------------------

TABLE = """# Architecture

## Modules

Every module is named in the first column, or in the role of its package's row.

| module | role |
|---|---|
| `agent/cli.py` | parses, calls, prints |
| `agent/capture/input.py`, `screen.py` | hooks; the grabber (see `agent/cli.py`) |
| `agent/keyboard/` | the vocabulary: `names.py`, `hotkey.py` |
| `agent/backends/xorg/` | X11: `__init__.py` (`XorgBackend`), `focus.py` |

## Decisions

- `agent/nowhere.py` is outside the table: not checked.
"""

TREE = {
    "agent/__init__.py": '"""optin."""\n__version__ = "1"\n',
    "agent/cli.py": "",
    "agent/capture/__init__.py": '"""Capture."""\nfrom __future__ import annotations\n',
    "agent/capture/input.py": "",
    "agent/capture/screen.py": "",
    "agent/keyboard/__init__.py": '"""Keys."""\n',
    "agent/keyboard/names.py": "",
    "agent/keyboard/hotkey.py": "",
    "agent/backends/__init__.py": '"""Backends."""\n__all__ = ["x"]\n',
    "agent/backends/xorg/__init__.py": "class XorgBackend:\n    pass\n",
    "agent/backends/xorg/focus.py": "",
}


def make_tree(root: Path, files: dict[str, str], table: str = TABLE) -> Path:
    for name, source in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(source, encoding="utf-8")
    (root / "docs").mkdir(parents=True, exist_ok=True)
    (root / "docs" / "architecture.md").write_text(table, encoding="utf-8")
    return root


def test_a_tree_and_its_table_agree(tmp_path: Path) -> None:
    assert map_problems(make_tree(tmp_path, TREE)) == []


def test_an_added_module_must_be_listed(tmp_path: Path) -> None:
    root = make_tree(tmp_path, {**TREE, "agent/capture/sources.py": ""})
    assert map_problems(root) == ["agent/capture/sources.py is not in docs/architecture.md's module table"]


def test_a_removed_module_must_leave_the_table(tmp_path: Path) -> None:
    root = make_tree(tmp_path, {k: v for k, v in TREE.items() if k != "agent/keyboard/hotkey.py"})
    assert map_problems(root) == ["docs/architecture.md names agent/keyboard/hotkey.py, which does not exist"]


def test_a_moved_module_fails_both_ways(tmp_path: Path) -> None:
    files = {k: v for k, v in TREE.items() if k != "agent/capture/screen.py"}
    root = make_tree(tmp_path, {**files, "agent/frame_codec.py": ""})
    assert map_problems(root) == [
        "agent/frame_codec.py is not in docs/architecture.md's module table",
        "docs/architecture.md names agent/capture/screen.py, which does not exist",
    ]


def test_a_stale_reference_in_a_role_fails(tmp_path: Path) -> None:
    table = TABLE.replace("(see `agent/cli.py`)", "(see `agent/gone.py`)")
    assert map_problems(make_tree(tmp_path, TREE, table)) == [
        "docs/architecture.md names agent/gone.py, which does not exist"
    ]


@pytest.mark.parametrize(
    ("source", "listed"),
    [
        pytest.param('"""Only a docstring."""\n', False, id="docstring"),
        pytest.param('"""Re-exports."""\nfrom agent.x import y\n__all__ = ["y"]\n', False, id="imports"),
        pytest.param("EventSink = object\n", True, id="a-constant"),
        pytest.param("def select() -> None:\n    pass\n", True, id="a-function"),
    ],
)
def test_a_package_init_is_a_module_when_it_defines_something(
    tmp_path: Path, source: str, listed: bool
) -> None:
    root = make_tree(tmp_path, {**TREE, "agent/store/__init__.py": source})
    expected = ["agent/store/__init__.py is not in docs/architecture.md's module table"] if listed else []
    assert map_problems(root) == expected


def test_a_bare_name_needs_a_full_path_before_it(tmp_path: Path) -> None:
    table = TABLE.replace("| `agent/cli.py` |", "| `cli.py` |")
    with pytest.raises(AssertionError, match="follows no agent/ path"):
        map_problems(make_tree(tmp_path, TREE, table))
