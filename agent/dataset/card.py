"""The dataset card of a version (docs/dataset.md, "Dataset card").

:func:`card_files` writes, from the :class:`~agent.dataset.stats.Stats` of the version (the same
numbers ``optin dataset stats`` prints: one implementation):

* ``README.md``: a Hugging Face dataset card. Its YAML header lists this version's shards exactly
  (``configs``, no glob) and the sample's schema (``dataset_info.features``); its sections give
  the version, study, totals, consent versions, steps by action, tasks, redactions, loss,
  distributions, quarantine by reason, withdrawals, how to load it and what it does not contain.
* ``features.json``: the Hugging Face ``datasets.Features`` of a sample (``Features.to_dict()``
  form), for ``load_dataset("webdataset", data_files=…, features=Features.from_dict(…))``.
  Written from :data:`SAMPLE_JSON`, a constant description of "The sample JSON" kept here, not by
  importing ``datasets`` (a test-only package): every key typed, including the ones that are null
  in many samples (a click's ``text``), which the loader would otherwise infer as ``null`` from its
  first five samples and then fail on.
* ``plots/session_minutes.png``, ``plots/steps_by_action.png``, ``plots/steps_per_volunteer.png``:
  matplotlib's Agg canvas, fixed size, DPI, style and PNG metadata (no ``Software``, no date), so
  the same version gives the same bytes.

The card holds counts and distributions only: no pseudonym, session id, SRC name, instruction,
title or other captured text. The few texts from the data it shows (consent versions, scopes,
redaction entity names, reason codes) are escaped for Markdown and cut.
"""

from __future__ import annotations

import io
import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

from agent.dataset.dest import Dest
from agent.dataset.layout import FORMAT
from agent.dataset.manifest import Version
from agent.dataset.stats import ACTIONS, LOSS_COUNTS, Histogram, Stats, collect, shown

# --- the sample's features --------------------------------------------------------------------------

#: A type of :data:`SAMPLE_JSON`: a Hugging Face ``Value`` dtype name, ``("list", type)``, or a
#: struct (a dict of key -> type, in the order the features list them).
FieldType = Any

_INT, _FLOAT, _STR, _BOOL = "int64", "float64", "string", "bool"

#: Every key of "The sample JSON" (docs/dataset.md) and its type. Objects that may be null
#: (``element``, ``frame``, ``task``, ``window``) are typed as their struct: Arrow stores a null
#: struct. Keys in the order the spec's table gives them; nested keys sorted as the JSON has them.
SAMPLE_JSON: dict[str, FieldType] = {
    "schema": _STR,
    "key": _STR,
    "session": _STR,
    "step": _INT,
    "volunteer": _STR,
    "volunteer_verified": _BOOL,
    "study": _STR,
    "consent_version": _STR,
    "bundle_schema": _STR,
    "agent_version": _STR,
    "action": _STR,
    "raw": {
        "button": _STR,
        "dx": _INT,
        "dy": _INT,
        "keys": ("list", _STR),
        "text": _STR,
        "to_x": _INT,
        "to_y": _INT,
        "x": _INT,
        "y": _INT,
    },
    "norm": {"code": _STR, "to_x": _FLOAT, "to_y": _FLOAT, "x": _FLOAT, "y": _FLOAT},
    "has_image": _BOOL,
    "frame": {
        "height": _INT,
        "left": _INT,
        "line": _INT,
        "reason": _STR,
        "t_ns": _INT,
        "top": _INT,
        "transcoded_from": _STR,
        "width": _INT,
    },
    "t_start_ns": _INT,
    "t_end_ns": _INT,
    "utc_start_ns": _INT,
    "utc_end_ns": _INT,
    "after_gap": _BOOL,
    "window": {
        "app_class": _STR,
        "height": _INT,
        "title": _STR,
        "width": _INT,
        "x": _INT,
        "y": _INT,
    },
    "element": {
        "app": _STR,
        "automation_id": _STR,
        "bounds": ("list", _INT),
        "name": _STR,
        "path": ("list", {"name": _STR, "role": _STR}),
        "role": _STR,
        "states": ("list", _STR),
    },
    "task": {
        "id": _STR,
        "index": _INT,
        "instruction": _STR,
        "outcome": _STR,
        "source": _STR,
        "time_limit_s": _INT,
    },
}

#: The plots of a card, in the order the manifest lists them.
PLOTS = ("plots/session_minutes.png", "plots/steps_by_action.png", "plots/steps_per_volunteer.png")
#: Every plot's size in inches and its resolution: 800 x 400 pixels.
PLOT_SIZE = (8.0, 4.0)
PLOT_DPI = 100


def _hf(kind: FieldType) -> Any:
    """One type as ``datasets.Features.to_dict()`` writes it."""
    if isinstance(kind, str):
        return {"dtype": kind, "_type": "Value"}
    if isinstance(kind, tuple):
        return {"feature": _hf(kind[1]), "_type": "List"}
    return {name: _hf(sub) for name, sub in kind.items()}


def features_dict() -> dict[str, Any]:
    """A sample's features as ``datasets.Features.to_dict()`` gives them: ``__key__``, ``json``, ``webp``."""
    return {
        "__key__": {"dtype": "string", "_type": "Value"},
        "json": _hf(SAMPLE_JSON),
        "webp": {"_type": "Image"},
    }


def features_json() -> bytes:
    """``features.json``: :func:`features_dict` as sorted, indented JSON (stable bytes)."""
    return (json.dumps(features_dict(), indent=1, sort_keys=False, ensure_ascii=True) + "\n").encode("ascii")


def _yaml_field(name: str, kind: FieldType) -> dict[str, Any]:
    """One feature in the dataset card's YAML list form (``Features._to_yaml_list``)."""
    if isinstance(kind, str):
        return {"name": name, "dtype": kind}
    if isinstance(kind, tuple):
        inner = kind[1]
        listed = inner if isinstance(inner, str) else [_yaml_field(n, t) for n, t in inner.items()]
        return {"name": name, "list": listed}
    return {"name": name, "struct": [_yaml_field(n, t) for n, t in kind.items()]}


def features_yaml() -> list[dict[str, Any]]:
    """The sample's features as the card's ``dataset_info.features`` list."""
    return [
        {"name": "__key__", "dtype": "string"},
        _yaml_field("json", SAMPLE_JSON),
        {"name": "webp", "dtype": "image"},
    ]


# --- YAML and Markdown ------------------------------------------------------------------------------


def _scalar(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    return json.dumps(str(value), ensure_ascii=True)  # a JSON string is a YAML double-quoted scalar


def yaml_lines(value: Any, indent: int = 0) -> list[str]:
    """``value`` (dicts, lists, strings, integers) as block YAML; every string double-quoted."""
    pad = " " * indent
    out: list[str] = []
    if isinstance(value, Mapping):
        for key, sub in value.items():
            if isinstance(sub, (Mapping, list)) and sub:
                out.append(f"{pad}{key}:")
                out += yaml_lines(sub, indent + (0 if isinstance(sub, list) else 2))
            else:
                out.append(f"{pad}{key}: {_scalar(sub) if not isinstance(sub, (Mapping, list)) else '[]'}")
    else:
        for item in value:
            if isinstance(item, (Mapping, list)):
                inner = yaml_lines(item, indent + 2)
                out.append(f"{pad}- {inner[0].lstrip()}")
                out += inner[1:]
            else:
                out.append(f"{pad}- {_scalar(item)}")
    return out


_MD_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+\-.!|<>~&])")


def md(text: str, limit: int = 80) -> str:
    """A text from the data in Markdown: escaped (controls as ``\\uXXXX``), cut, punctuation quoted."""
    return _MD_SPECIAL.sub(r"\\\1", shown(text, limit))


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    return out


def _cell(value: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:,.2f}"
    return str(value)


# --- plots ------------------------------------------------------------------------------------------


def _figure() -> tuple[Any, Any]:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=PLOT_SIZE, dpi=PLOT_DPI, layout="constrained")
    FigureCanvasAgg(figure)
    return figure, figure.add_subplot()


def _png(figure: Any) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=PLOT_DPI, metadata={"Software": None})
    return buffer.getvalue()


def _histogram_plot(h: Histogram, title: str, xlabel: str, ylabel: str) -> bytes:
    import matplotlib

    with matplotlib.rc_context(rc=_style()):
        figure, axes = _figure()
        widths = [h.edges[i + 1] - h.edges[i] for i in range(len(h.counts))]
        axes.bar(h.edges[:-1], h.counts, width=widths, align="edge", color="#4c72b0", edgecolor="white")
        axes.set_xlim(h.edges[0], h.edges[-1])
        axes.set_title(title)
        axes.set_xlabel(xlabel)
        axes.set_ylabel(ylabel)
        axes.yaxis.get_major_locator().set_params(integer=True)
        if not h.n:
            axes.text(0.5, 0.5, "no data", transform=axes.transAxes, ha="center", va="center")
        return _png(figure)


def _bars_plot(counts: Mapping[str, int], title: str) -> bytes:
    import matplotlib

    with matplotlib.rc_context(rc=_style()):
        figure, axes = _figure()
        names = list(ACTIONS) + [k for k in counts if k not in ACTIONS]
        values = [counts.get(n, 0) for n in names]
        axes.bar(range(len(names)), values, color="#4c72b0")
        axes.set_xticks(range(len(names)), [shown(n, 20) for n in names], rotation=30, ha="right")
        axes.set_title(title)
        axes.set_ylabel("steps")
        axes.yaxis.get_major_locator().set_params(integer=True)
        return _png(figure)


def _style() -> Any:
    """matplotlib's defaults, whatever the user's matplotlibrc says, with the card's fonts."""
    import matplotlib

    rc = {k: v for k, v in matplotlib.rcParamsDefault.items() if k not in _NOT_STYLE}
    rc.update({"font.family": "DejaVu Sans", "font.size": 10.0, "savefig.dpi": PLOT_DPI})
    rc.update({"path.simplify": True, "svg.hashsalt": "optin", "image.interpolation": "nearest"})
    return rc


#: rcParams that are not style (matplotlib.style leaves them alone too).
_NOT_STYLE = frozenset(
    {
        "backend",
        "backend_fallback",
        "interactive",
        "toolbar",
        "timezone",
        "webagg.port",
        "webagg.address",
        "webagg.port_retries",
        "webagg.open_in_browser",
        "figure.max_open_warning",
        "figure.raise_window",
        "savefig.directory",
        "tk.window_focus",
        "docstring.hardcopy",
        "date.epoch",
    }
)


def plots(stats: Stats) -> dict[str, bytes]:
    """The card's three PNGs (no pseudonym: histograms, never a bar per volunteer)."""
    return {
        "plots/session_minutes.png": _histogram_plot(
            stats.session_histogram(), "Session durations", "minutes", "sessions"
        ),
        "plots/steps_by_action.png": _bars_plot(stats.steps_by_action, "Steps by action"),
        "plots/steps_per_volunteer.png": _histogram_plot(
            stats.volunteer_histogram(), "Steps per volunteer", "steps", "volunteers"
        ),
    }


# --- README.md --------------------------------------------------------------------------------------


def _header(version: Version, stats: Stats) -> list[str]:
    meta = {
        "pretty_name": f"optin dataset {version.study.id[:80]}, version {version.version}",
        "tags": ["optin", "computer-use", "webdataset"],
        "configs": [
            {
                "config_name": "default",
                "data_files": [{"split": "train", "path": [p.shard.path for p in version.parts]}],
            }
        ],
        "dataset_info": {
            "config_name": "default",
            "features": features_yaml(),
        },
    }
    return ["---", *yaml_lines(meta), "---"]


def readme(version: Version, stats: Stats) -> bytes:
    """``README.md`` of ``version`` from its ``stats`` (deterministic: nothing else goes in)."""
    n = version.version
    t = stats.totals
    title = f"optin dataset: {md(version.study.name, 120)} ({md(version.study.id)}), version {n}"
    lines = [*_header(version, stats), "", f"# {title}", ""]
    lines += [
        "Demonstrations of people using their computers, recorded with consent by optin and donated to "
        "this study: one sample per step (the action and the screen just before it). This card was "
        f"written by optin {md(version.tool)} from the version's tables, as `optin dataset stats` "
        "reads them; it holds counts only, never a volunteer's pseudonym, a session id or any captured "
        "text.",
        "",
        "## Version",
        "",
        *_table(
            ["", ""],
            [
                ["version", n],
                ["format", f"`{FORMAT}`"],
                ["study", f"{md(version.study.id)} ({md(version.study.name, 120)})"],
                ["written by", f"optin {md(version.tool)}"],
                ["published", f"`published_at` in `versions/v{n:06d}.json` and `CURRENT`"],
            ],
        ),
        "",
        "## Totals",
        "",
        *_table(
            ["", ""],
            [
                ["volunteers", t["volunteers"]],
                ["sessions", t["sessions"]],
                ["hours of recording", float(t["hours"])],
                ["steps (samples)", t["steps"]],
                ["samples without image", t["samples_without_image"]],
                ["tasks", t["tasks"]],
                ["events", t["events"]],
                ["shards", stats.shards["count"]],
                ["shard bytes", stats.shards["bytes"]],
                ["bytes of all parts (shards, indexes, tables)", t["bytes"]],
            ],
        ),
        "",
        "## Consent versions",
        "",
        *_table(
            ["consent version", "sessions", "volunteers", "scopes (sessions)"],
            [
                [
                    md(v),
                    c["sessions"],
                    c["volunteers"],
                    ", ".join(f"{md(s)} {k:,}" for s, k in c["scopes"].items()),
                ]
                for v, c in stats.consent_versions.items()
            ],
        ),
        "",
        "## Steps by action",
        "",
        *_table(["action", "steps"], [[md(a), k] for a, k in stats.steps_by_action.items()]),
        "",
        "![Steps by action](plots/steps_by_action.png)",
        "",
        "## Tasks by source and outcome",
        "",
        *_table(
            ["source", "outcome", "tasks"],
            [[md(s), md(o), k] for s, c in stats.tasks_by_source.items() for o, k in c.items()],
        ),
        "",
        "## Redactions by place and entity",
        "",
        "What the redaction replaced before the volunteer exported (a detected span reads `[EMAIL]`, ...).",
        "",
        *_table(
            ["place", "entity", "count"],
            [[md(w), md(e), k] for w, c in stats.redactions.items() for e, k in c.items()],
        ),
        "",
        *_loss(stats),
        "## Distributions",
        "",
        *_distribution("Session durations (minutes)", stats.session_histogram(), "plots/session_minutes.png"),
        *_distribution("Steps per volunteer", stats.volunteer_histogram(), "plots/steps_per_volunteer.png"),
        "## Quarantine",
        "",
        'Bundles the build refused, by reason code (docs/dataset.md, "Reason codes"); they stay in SRC '
        "and none of their content is here.",
        "",
        *(
            _table(["reason", "bundles"], [[md(r), k] for r, k in stats.quarantine_by_reason.items()])
            if stats.quarantine
            else ["None."]
        ),
        "",
        "## Withdrawals",
        "",
        f"{stats.withdrawals:,} volunteer{'s have' if stats.withdrawals != 1 else ' has'} withdrawn; "
        "their data is not in this version, and later builds refuse their bundles.",
        "",
        *_loading(version),
        *_limits(),
    ]
    return ("\n".join(lines) + "\n").encode("utf-8")


def _loss(stats: Stats) -> list[str]:
    loss = stats.loss
    rows: list[list[Any]] = [
        ["sessions with any loss", loss["sessions_with_loss"]],
        ["sessions not stopped cleanly", loss["unclean_stops"]],
        ["sessions with store problems", loss["sessions_with_store_problems"]],
        *([k.replace("_", " "), loss[k]] for k in LOSS_COUNTS),
        ["sessions without the stop's counts", loss["sessions_without_stop_counts"]],
        ["pauses", loss["pauses"]],
        ["seconds paused", float(loss["paused_s"])],
        ["cuts", loss["cuts"]],
        ["seconds cut", float(loss["cut_s"])],
    ]
    elements = loss["elements"]
    if elements["sessions"]:
        rows += [[f"element lookups: {k.replace('_', ' ')}", elements[k]] for k in elements]
    return [
        "## Loss",
        "",
        "What the recorder could not keep, and the gaps volunteers made (pauses, cuts): a sample's "
        "`after_gap` marks the step after one.",
        "",
        *_table(["", ""], rows),
        "",
    ]


def _distribution(title: str, h: Histogram, plot: str) -> list[str]:
    return [
        f"### {title}",
        "",
        f"{h.n:,} values; minimum {h.low:,.2f}, median {h.median:,.2f}, maximum {h.high:,.2f}.",
        "",
        f"![{title}]({plot})",
        "",
    ]


def _loading(version: Version) -> list[str]:
    n = version.version
    shards = [p.shard.path for p in version.parts]
    steps = [p.tables["steps"].path for p in version.parts]
    card = f"cards/v{n:06d}"
    return [
        "## How to load it",
        "",
        "Paths are relative to the dataset's top folder (DEST). This version's shards are the ones the "
        f"YAML header lists ({len(shards):,}); `versions/v{n:06d}.wids.json` lists them with their sample "
        f"counts; `{card}/features.json` is the sample's schema.",
        "",
        "WebDataset:",
        "",
        "```python",
        "import json, webdataset as wds",
        f'shards = [s["url"] for s in json.load(open("versions/v{n:06d}.wids.json"))["shardlist"]]',
        'for sample in wds.WebDataset(shards, shardshuffle=False).decode("pil"):',
        '    step, image = sample["json"], sample["webp"]',
        "```",
        "",
        "wids (random access; it resolves the URLs against the descriptor's folder, so use the top copy):",
        "",
        "```python",
        "import wids",
        'dataset = wids.ShardListDataset("wids.json")',
        "```",
        "",
        "Hugging Face `datasets` (give the features: inference from the first samples types a field "
        "that is null there, such as a click's `text`, wrongly):",
        "",
        "```python",
        "import json",
        "from datasets import Features, load_dataset",
        f'features = Features.from_dict(json.load(open("{card}/features.json")))',
        f'shards = [s["url"] for s in json.load(open("versions/v{n:06d}.wids.json"))["shardlist"]]',
        'ds = load_dataset("webdataset", data_files={"train": shards}, features=features, split="train")',
        "```",
        "",
        "The DEST folder alone (Hugging Face `datasets` 5.2 reads the shards and the features from this "
        "card's YAML header; a copy of the folder works the same):",
        "",
        "```python",
        "from datasets import load_dataset",
        'ds = load_dataset("path/to/DEST", split="train")',
        "```",
        "",
        "DuckDB over the tables (the version manifest lists every table file; these are the `steps` files):",
        "",
        "```sql",
        "SELECT action, count(*) FROM read_parquet(["  # noqa: S608 - a snippet in the card, never run
        + ", ".join(f"'{p}'" for p in steps)
        + "], hive_partitioning = true) GROUP BY action;",
        "```",
        "",
        "Read `CURRENT`, then the version manifest it names, and only the objects it lists: a listing of "
        "the folder also shows objects of unfinished builds and objects waiting to be deleted.",
        "",
    ]


def _limits() -> list[str]:
    return [
        "## What this data does not contain, and what redaction cannot promise",
        "",
        "- Only what each volunteer's consent scopes allowed, after the study's redaction policy and the "
        "volunteer's own review. A step without a frame (no `screen` scope, or a frame that failed or was "
        "left out) carries a 1 x 1 grey placeholder image (`has_image` false).",
        "- No keystrokes outside `type`, `key` and `hotkey` steps' redacted fields; nothing typed into "
        "password fields (left out at the source); no frames other than each step's pre-action frame.",
        "- Volunteers appear only as pseudonyms (one per volunteer and study), never by name. Window "
        "titles, element names, task instructions and typed text are kept after redaction, and can still "
        "hold a name the detectors missed.",
        "- Redaction is detection: a detector can miss a name, an address or a secret written in an "
        "unusual way, on screen or in text. Read optin's docs/redaction.md (what is detected, and "
        "how) and docs/operator-guide.md section 7 (what you cannot see or do, and what you must do) "
        "before you share or train on this data.",
        "- Withdrawn volunteers are gone from this version; a copy made before a withdrawal is not.",
        "",
    ]


# --- the card ---------------------------------------------------------------------------------------


def card_from_stats(version: Version, stats: Stats) -> dict[str, bytes]:
    """The card's files from ``stats`` (pure: the same arguments give the same bytes)."""
    return {"README.md": readme(version, stats), "features.json": features_json(), **plots(stats)}


def card_files(dest: Dest, version: Version) -> dict[str, bytes]:
    """``README.md``, ``features.json`` and ``plots/*.png`` of ``version`` (not yet published: its
    tables, ledger and register are written).

    :raises DestError: a table the version lists cannot be read.
    """
    return card_from_stats(version, collect(dest, version, versioning=False))


__all__ = [
    "PLOTS",
    "SAMPLE_JSON",
    "card_files",
    "card_from_stats",
    "features_dict",
    "features_json",
    "features_yaml",
    "plots",
    "readme",
    "yaml_lines",
]
