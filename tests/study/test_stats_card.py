"""``optin dataset stats`` and the dataset card, on a DEST built from real synthetic bundles.

Every number of stats is checked against what tests/study/synth.py made; the card's bytes are the
same at every render (also under a user's matplotlibrc) and hold no pseudonym, session id or captured
text; and the shards load with the readers the card names: Hugging Face ``datasets`` (with the card's
features, and from the DEST folder alone, which reads them from README.md), ``webdataset`` and DuckDB
over the version's tables.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import zlib
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from agent.dataset import card
from agent.dataset.build import BuildOptions, build
from agent.dataset.layout import LayoutError
from agent.dataset.manifest import Version
from agent.dataset.stats import CheckFailed, Stats, collect, histogram, listed_objects, run_stats
from agent.dataset.stores import open_dest
from agent.dataset.versions import read_current
from agent.errors import UsageError
from tests.servers import S3Server
from tests.study.synth import CYCLE, STUDY_TASK_INSTRUCTION, SynthBundle, make_bundles, make_study_identity

ROOT = Path(__file__).resolve().parents[2]
GARBAGE = b"not an age file, just bytes " * 3
#: What the quarantined file is called in SRC: the card must never show it.
GARBAGE_NAME = "x-quarantine-marker.optin.tar.age"
#: Keys of ``stats --json`` the spec lists (docs/dataset.md, "optin dataset stats").
SPEC_KEYS = {
    "version",
    "published_at",
    "study",
    "totals",
    "steps_by_action",
    "tasks_by_outcome",
    "redactions",
    "loss",
    "consent_versions",
    "shards",
    "quarantine",
    "withdrawals",
    "pending_purge",
    "versioning",
}


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[SynthBundle], Path, Path]:
    """A local DEST of 12 bundles of 3 volunteers and a garbage file: (dest, bundles, src, identity)."""
    base = tmp_path_factory.mktemp("stats")
    identity, recipient = make_study_identity(base)
    src = base / "src"
    bundles = make_bundles(src, recipient, volunteers=3, sessions=4, seed=11)
    (src / GARBAGE_NAME).write_bytes(GARBAGE)
    dest = base / "dest"
    report = build(BuildOptions(src=str(src), dest=str(dest), identity_file=identity, workers=2))
    assert (report.ingested, len(report.quarantined), report.version) == (12, 1, 1)
    return dest, bundles, src, identity


def version_of(where: str) -> Version:
    with open_dest(where) as dest:
        version = read_current(dest)
    assert version is not None
    return version


def expected_numbers(bundles: list[SynthBundle]) -> dict[str, Any]:
    """What synth made, from its own records (variant, steps, volunteer)."""
    variants = [b.variant for b in bundles]
    assert all(v is not None for v in variants)
    actions: Counter[str] = Counter()
    for b in bundles:
        actions.update(CYCLE[n % len(CYCLE)] for n in range(b.steps))
    tasks = [v.task for v in variants if v is not None and v.task is not None]
    per_volunteer: Counter[str] = Counter()
    for b in bundles:
        per_volunteer[b.volunteer] += b.steps
    return {
        "sessions": len(bundles),
        "volunteers": len({b.volunteer for b in bundles}),
        "steps": sum(b.steps for b in bundles),
        "actions": dict(actions),
        "without_image": sum(1 for v in variants if v is not None and not v.first_step_frame),
        "tasks": len(tasks),
        "by_source": {
            **({"study": {"done": tasks.count("study")}} if "study" in tasks else {}),
            **({"volunteer": {"failed": tasks.count("free")}} if "free" in tasks else {}),
        },
        "pauses": sum(1 for v in variants if v is not None and v.pause),
        "free_tasks": tasks.count("free"),
        "steps_per_volunteer": sorted(per_volunteer.values()),
    }


def check_numbers(stats: Stats, bundles: list[SynthBundle]) -> None:
    want = expected_numbers(bundles)
    t = stats.totals
    assert (t["sessions"], t["volunteers"], t["steps"]) == (
        want["sessions"],
        want["volunteers"],
        want["steps"],
    )
    assert t["samples_without_image"] == want["without_image"] > 0
    assert stats.steps_by_action == want["actions"]
    assert stats.tasks_by_source == want["by_source"]
    assert stats.tasks_by_outcome == {
        "done": want["by_source"]["study"]["done"],
        "failed": want["free_tasks"],
    }
    assert t["tasks"] == want["tasks"]
    # every session types an address (typed), focuses the mail window (titles); free tasks' instructions
    assert stats.redactions == {
        "typed": {"EMAIL": want["sessions"]},
        "titles": {"EMAIL": want["sessions"]},
        "instructions": {"EMAIL": want["free_tasks"]},
    }
    assert stats.consent_versions == {
        "1": {
            "sessions": want["sessions"],
            "volunteers": want["volunteers"],
            "scopes": {s: want["sessions"] for s in ("keyboard", "pointer", "screen", "window_titles")},
        }
    }
    assert stats.loss["pauses"] == want["pauses"] > 0
    assert stats.loss["paused_s"] > 0
    assert (stats.loss["sessions_with_loss"], stats.loss["unclean_stops"], stats.loss["cuts"]) == (0, 0, 0)
    assert stats.steps_per_volunteer == want["steps_per_volunteer"]
    assert len(stats.session_minutes) == want["sessions"]
    assert all(0 < m < 5 for m in stats.session_minutes)
    assert 0 < t["hours"] < 1
    minutes = stats.session_histogram()
    assert sum(minutes.counts) == minutes.n == want["sessions"]
    assert stats.withdrawals == 0
    assert stats.pending_purge == []


def test_stats_counts_what_synth_made(built: Any) -> None:
    dest, bundles, _, _ = built
    stats = run_stats(str(dest), None, False)
    check_numbers(stats, bundles)
    version = version_of(str(dest))
    assert (stats.version, stats.published_at) == (1, version.published_at)
    assert stats.study == {"id": version.study.id, "name": version.study.name}
    assert stats.totals["events"] == version.totals.events
    assert stats.totals["samples_without_image"] == version.totals.samples_without_image
    assert stats.shards == {"count": len(version.parts), "bytes": sum(p.shard.size for p in version.parts)}
    assert stats.versioning == "none"
    assert stats.checked is None
    doc = stats.to_json()
    assert set(doc) >= SPEC_KEYS
    assert json.loads(json.dumps(doc)) == doc


def test_stats_lists_the_quarantine(built: Any) -> None:
    import hashlib

    dest, _, _, _ = built
    stats = run_stats(str(dest), None, False)
    assert stats.quarantine == [
        {
            "sha256": hashlib.sha256(GARBAGE).hexdigest(),
            "size": len(GARBAGE),
            "source": GARBAGE_NAME,
            "reason": "not_age",
            "stage": "age",
        }
    ]
    assert stats.quarantine_by_reason == {"not_age": 1}
    text = stats.render()
    assert f"{hashlib.sha256(GARBAGE).hexdigest()[:12]}…" in text
    assert GARBAGE_NAME in text and "not_age" in text


def test_stats_text_shows_no_pseudonym_or_session(built: Any) -> None:
    dest, bundles, _, _ = built
    text = run_stats(str(dest), None, True).render()
    for b in bundles:
        assert b.volunteer not in text
        assert b.session not in text
    assert "version:       1, published" in text
    assert "steps:         click 12, drag 12, scroll 12, type 12, hotkey 12, key 12" in text
    assert "checked:" in text


def test_check_heads_every_listed_object(built: Any, tmp_path: Path) -> None:
    dest, bundles, _, _ = built
    version = version_of(str(dest))
    stats = run_stats(str(dest), 1, True)
    assert stats.checked == len(listed_objects(version)) + 1
    copy = tmp_path / "copy"
    shutil.copytree(dest, copy)
    shard = copy / version.parts[0].shard.path
    shard.unlink()
    # stats never reads a shard: without --check the numbers are all there
    check_numbers(run_stats(str(copy), None, False), bundles)
    plot = copy / version.card.plots[0].path if version.card else None
    assert plot is not None
    with plot.open("ab") as f:
        f.write(b"x")
    with pytest.raises(CheckFailed) as caught:
        run_stats(str(copy), None, True)
    message = str(caught.value)
    assert "2 of" in message
    assert str(shard) in message and "is missing" in message
    assert str(plot) in message and "not the" in message
    assert caught.value.exit_code == 1


def test_a_changed_table_is_refused(built: Any, tmp_path: Path) -> None:
    dest, _, _, _ = built
    version = version_of(str(dest))
    copy = tmp_path / "copy"
    shutil.copytree(dest, copy)
    listed = version.parts[0].tables["tasks"]
    (copy / listed.path).write_bytes((copy / version.parts[0].tables["frames"].path).read_bytes())
    with pytest.raises(LayoutError, match="not the object the version lists"):
        run_stats(str(copy), None, False)


def test_stats_refuses_a_dest_without_a_version(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    with pytest.raises(UsageError, match="is not a folder"):
        run_stats(str(missing), None, False)
    assert not missing.exists()
    empty = tmp_path / "empty"
    empty.mkdir(mode=0o700)
    with pytest.raises(UsageError, match="no published version"):
        run_stats(str(empty), None, False)


def test_stats_of_a_version_dest_does_not_keep(built: Any) -> None:
    dest, _, _, _ = built
    with pytest.raises(LayoutError, match="version 9 is not in DEST"):
        run_stats(str(dest), 9, False)
    with pytest.raises(UsageError):
        run_stats(str(dest), 0, False)


# --- the card ---------------------------------------------------------------------------------------


def card_of(where: str) -> dict[str, bytes]:
    with open_dest(where) as dest:
        version = read_current(dest)
        assert version is not None
        return card.card_files(dest, version)


def test_card_bytes_are_the_published_ones_every_time(built: Any) -> None:
    dest, _, _, _ = built
    first, second = card_of(str(dest)), card_of(str(dest))
    assert first == second
    assert set(first) == {"README.md", "features.json", *card.PLOTS}
    version = version_of(str(dest))
    assert version.card is not None
    published = {f.path.split("/", 2)[2]: (dest / f.path).read_bytes() for f in version.card.files()}
    assert published == first  # the build's card, written before published_at was known
    for name, data in first.items():
        assert (dest / name).read_bytes() == data  # the top copies


def test_plots_do_not_depend_on_a_users_matplotlibrc(built: Any, tmp_path: Path) -> None:
    dest, _, _, _ = built
    config = tmp_path / "mpl"
    config.mkdir()
    (config / "matplotlibrc").write_text(
        "font.size: 31\naxes.facecolor: red\nfigure.dpi: 33\nsavefig.dpi: 44\nlines.linewidth: 9\n"
    )
    script = (
        "import sys, hashlib, json\n"
        "from agent.dataset.stores import open_dest\n"
        "from agent.dataset.versions import read_current\n"
        "from agent.dataset.card import card_files\n"
        "with open_dest(sys.argv[1]) as d:\n"
        "    files = card_files(d, read_current(d))\n"
        "print(json.dumps({k: hashlib.sha256(v).hexdigest() for k, v in files.items()}))\n"
    )
    env = {**os.environ, "MPLCONFIGDIR": str(config), "MPLBACKEND": "pdf"}
    out = subprocess.run(
        [sys.executable, "-c", script, str(dest)],
        env=env,
        cwd=ROOT,
        capture_output=True,
        check=True,
        timeout=120,
    )
    import hashlib

    here = {k: hashlib.sha256(v).hexdigest() for k, v in card_of(str(dest)).items()}
    assert json.loads(out.stdout) == here


def png_chunks(data: bytes) -> list[tuple[bytes, bytes]]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    chunks, at = [], 8
    while at < len(data):
        size = int.from_bytes(data[at : at + 4], "big")
        chunks.append((data[at + 4 : at + 8], data[at + 8 : at + 8 + size]))
        at += 12 + size
    return chunks


def test_card_holds_no_pseudonym_session_or_captured_text(built: Any) -> None:
    dest, bundles, _, _ = built
    files = card_of(str(dest))
    secrets = {b.volunteer for b in bundles} | {b.session for b in bundles}
    secrets |= {b.signing_key for b in bundles}
    secrets |= {STUDY_TASK_INSTRUCTION, "Staff portal", "example.com", "example.org", "Username", "Inbox"}
    secrets |= {GARBAGE_NAME, "x-quarantine-marker", "to:"}
    for name, data in files.items():
        blobs = [data]
        if name.endswith(".png"):
            chunks = png_chunks(data)
            kinds = {kind for kind, _ in chunks}
            assert kinds <= {b"IHDR", b"pHYs", b"IDAT", b"IEND"}, (name, kinds)  # no text, no time
            blobs.append(zlib.decompress(b"".join(body for kind, body in chunks if kind == b"IDAT")))
        for blob in blobs:
            for secret in secrets:
                assert secret.encode() not in blob, (name, secret)


def test_readme_header_lists_the_shards_and_the_features(built: Any) -> None:
    import yaml  # type: ignore[import-untyped]
    from datasets import Features  # type: ignore[import-untyped]

    dest, _, _, _ = built
    files = card_of(str(dest))
    text = files["README.md"].decode("utf-8")
    assert text.startswith("---\n")
    meta = yaml.safe_load(text.split("---\n")[1])
    version = version_of(str(dest))
    config = meta["configs"][0]
    assert config["config_name"] == "default"
    assert config["data_files"] == [{"split": "train", "path": [p.shard.path for p in version.parts]}]
    from_yaml = Features._from_yaml_list(meta["dataset_info"]["features"])
    from_json = Features.from_dict(json.loads(files["features.json"]))
    assert from_yaml == from_json
    assert from_json.to_dict() == card.features_dict()
    for heading in (
        "## Version",
        "## Totals",
        "## Consent versions",
        "## Steps by action",
        "## Tasks by source and outcome",
        "## Redactions by place and entity",
        "## Loss",
        "## Distributions",
        "## Quarantine",
        "## Withdrawals",
        "## How to load it",
        "## What this data does not contain",
    ):
        assert f"\n{heading}" in text, heading
    assert "| not\\_age | 1 |" in text
    for plot in card.PLOTS:
        assert f"]({plot})" in text


def test_card_escapes_texts_from_the_data(built: Any) -> None:
    dest, _, _, _ = built
    with open_dest(str(dest)) as d:
        version = read_current(d)
        assert version is not None
        stats = collect(d, version, versioning=False)
    stats.consent_versions = {
        "1 | <script>\n# x": {"sessions": 1, "volunteers": 1, "scopes": {"a\u202eb": 1}}
    }
    stats.redactions = {"typed": {"E](http://evil)": 2}}
    text = card.readme(version, stats).decode("utf-8")
    row = next(line for line in text.splitlines() if line.startswith("| 1 "))
    assert "<script>" not in text and "\n# x" not in text
    assert row.count(" | ") == 3  # the pipe in the version is escaped, the row keeps its 4 cells
    assert "\\u202e" in text and "\u202e" not in text
    assert "E\\]\\(http://evil\\)" in text


def test_a_version_with_nothing_left_has_a_card(built: Any) -> None:
    """After a withdrawal of everyone a version holds no part: zeros, empty tables, plots without data."""
    import dataclasses

    dest, _, _, _ = built
    with open_dest(str(dest)) as d:
        version = read_current(d)
        assert version is not None
        empty = dataclasses.replace(version, parts=(), ledger=(), register=None)
        stats = collect(d, empty, versioning=False)
    assert stats.totals["sessions"] == stats.totals["steps"] == stats.shards["count"] == 0
    assert stats.steps_by_action == {} and stats.quarantine == [] and stats.session_minutes == []
    files = card.card_from_stats(empty, stats)
    assert set(files) == {"README.md", "features.json", *card.PLOTS}
    assert "| volunteers | 0 |" in files["README.md"].decode()
    assert "None." in files["README.md"].decode()
    assert card.card_from_stats(empty, stats) == files


def test_histogram_bins_hold_every_value() -> None:
    h = histogram([1.0, 2.0, 2.0, 24.0], integers=True)
    assert sum(h.counts) == h.n == 4
    assert h.edges[0] == 0 and h.edges[-1] > 24
    assert (h.low, h.median, h.high) == (1.0, 2.0, 24.0)
    widths = {h.edges[i + 1] - h.edges[i] for i in range(len(h.counts))}
    assert len(widths) == 1 and widths.pop() == int(h.edges[1])
    empty = histogram([])
    assert (empty.n, sum(empty.counts)) == (0, 0)


# --- the readers the card names ---------------------------------------------------------------------


def shard_files(dest: Path, version: Version) -> list[str]:
    return [str(dest / p.shard.path) for p in version.parts]


def shard_samples(paths: list[str]) -> dict[str, dict[str, Any]]:
    """Every sample's JSON, straight from the tar members."""
    out: dict[str, dict[str, Any]] = {}
    for path in paths:
        with tarfile.open(path) as tar:
            for member in tar:
                if member.name.endswith(".json"):
                    f = tar.extractfile(member)
                    assert f is not None
                    out[member.name[: -len(".json")]] = json.loads(f.read())
    return out


@pytest.fixture
def hf_offline(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    return tmp_path / "hf-cache"


def test_hugging_face_loads_every_sample_with_the_cards_features(built: Any, hf_offline: Path) -> None:
    from datasets import Features, load_dataset

    dest, _, _, _ = built
    version = version_of(str(dest))
    paths = shard_files(dest, version)
    features = Features.from_dict(json.loads((dest / "features.json").read_bytes()))
    ds = load_dataset(
        "webdataset", data_files=paths, features=features, split="train", cache_dir=str(hf_offline)
    )
    assert len(ds) == version.totals.steps
    assert ds.features == features
    truth = shard_samples(paths)
    seen = set()
    for row in ds:
        assert set(row) == {"__key__", "json", "webp"}
        doc = truth[row["__key__"]]
        assert row["json"] == doc  # every key, every value, nulls where the JSON has them
        assert set(row["json"]) == set(card.SAMPLE_JSON)
        assert row["webp"].size == ((64, 40) if doc["has_image"] else (1, 1))
        seen.add(row["__key__"])
    assert seen == set(truth)
    docs = list(truth.values())
    # the data covers what inference would get wrong: nulls next to values in one field
    assert any(d["frame"] is None for d in docs) and any(d["frame"] for d in docs)
    assert any(d["raw"]["text"] for d in docs) and any(d["raw"]["text"] is None for d in docs)
    assert any(d["element"] is None for d in docs) and any(d["element"] for d in docs)
    assert any(d["task"] is None for d in docs) and any(d["task"] for d in docs)


def test_hugging_face_reads_the_features_from_the_dest_folders_readme(built: Any, hf_offline: Path) -> None:
    """docs/dataset.md open question 5: ``load_dataset(DEST)`` takes configs and dataset_info.features
    from README.md (``frame.transcoded_from`` is null in every sample: inferred, it would not be a string)."""
    from datasets import Features, load_dataset

    dest, _, _, _ = built
    version = version_of(str(dest))
    ds = load_dataset(str(dest), split="train", cache_dir=str(hf_offline))
    assert len(ds) == version.totals.steps
    assert ds.features == Features.from_dict(card.features_dict())
    assert ds.features["json"]["frame"]["transcoded_from"].dtype == "string"


# webdataset 1.0.2 leaves the shard's file for the garbage collector (as in tests/study/test_shard.py)
@pytest.mark.filterwarnings("ignore::ResourceWarning", "ignore::pytest.PytestUnraisableExceptionWarning")
def test_webdataset_reads_every_sample(built: Any) -> None:
    import webdataset as wds

    dest, _, _, _ = built
    version = version_of(str(dest))
    paths = shard_files(dest, version)
    truth = shard_samples(paths)
    keys = []
    for sample in wds.WebDataset(paths, shardshuffle=False, empty_check=False):
        assert {k for k in sample if not k.startswith("__")} == {"json", "webp"}
        assert json.loads(sample["json"]) == truth[sample["__key__"]]
        keys.append(sample["__key__"])
    assert sorted(keys) == sorted(truth)


def test_the_wids_descriptor_lists_this_versions_shards(built: Any) -> None:
    """wids itself (PyPI ``wids``) imports torch, which the study extra does not install: the descriptor
    is checked against what ``wids.ShardListDataset`` reads (URLs relative to the file, ``nsamples``)."""
    dest, _, _, _ = built
    version = version_of(str(dest))
    desc = json.loads((dest / "wids.json").read_bytes())
    assert desc["__kind__"] == "wids-shard-index-v1" and desc["wids_version"] == 1
    listed = [(s["url"], s["nsamples"]) for s in desc["shardlist"]]
    assert listed == [(p.shard.path, p.steps) for p in version.parts]
    for url, n in listed:
        with tarfile.open(dest / url) as tar:
            assert sum(1 for m in tar if m.name.endswith(".json")) == n


def test_duckdb_over_the_versions_tables_agrees_with_stats(built: Any) -> None:
    import duckdb

    dest, _, _, _ = built
    version = version_of(str(dest))
    stats = run_stats(str(dest), None, False)
    steps = [str(dest / p.tables["steps"].path) for p in version.parts]
    con = duckdb.connect()
    rows = con.execute(
        "SELECT action, count(*) FROM read_parquet(?, hive_partitioning = true) GROUP BY action", [steps]
    ).fetchall()
    assert dict(rows) == stats.steps_by_action
    dates = con.execute("SELECT DISTINCT ingest_date FROM read_parquet(?, hive_partitioning = true)", [steps])
    assert [str(d[0]) for d in dates.fetchall()] == [version.parts[0].ingest_date]
    sessions = [str(dest / p.tables["sessions"].path) for p in version.parts]
    ((count, volunteers),) = con.execute(
        "SELECT count(*), count(DISTINCT volunteer) FROM read_parquet(?, hive_partitioning = true)",
        [sessions],
    ).fetchall()
    assert (count, volunteers) == (stats.totals["sessions"], stats.totals["volunteers"])


# --- S3 ---------------------------------------------------------------------------------------------


def test_stats_and_card_on_s3(built: Any, s3_env: S3Server) -> None:
    _, bundles, src, identity = built
    url = s3_env.url()
    report = build(BuildOptions(src=str(src), dest=url, identity_file=identity, workers=2))
    assert (report.ingested, len(report.quarantined)) == (12, 1)
    stats = run_stats(url, None, True)
    check_numbers(stats, bundles)
    assert stats.versioning in ("off", "enabled", "suspended")
    assert stats.checked is not None and stats.checked > 10
    assert [q["reason"] for q in stats.quarantine] == ["not_age"]
    version = version_of(url)
    files = card_of(url)
    with open_dest(url) as dest:
        assert version.card is not None
        for listed in version.card.files():
            assert dest.get(listed.path, max_size=listed.size).data == files[listed.path.split("/", 2)[2]]
        assert dest.get("README.md", max_size=1 << 20).data == files["README.md"]
    buffer = io.BytesIO(files["plots/steps_by_action.png"])
    assert buffer.read(8) == b"\x89PNG\r\n\x1a\n"
