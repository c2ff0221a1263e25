"""What ``optin dataset build`` prints (docs/dataset.md, "What it prints").

Counts, reason codes, SHA-256 prefixes and session ids; SRC names only through
:func:`agent.untrusted_text.visible`. Never a bundle's content.
"""

from __future__ import annotations

from collections import Counter

from agent.dataset.build import BuildReport
from agent.dataset.stats import plural
from agent.untrusted_text import visible


def _gb(size: int) -> str:
    return f"{size / 1e9:.2f} GB" if size >= 10**7 else f"{size / 1e6:.2f} MB"


def render_build(report: BuildReport) -> str:
    j = report.to_json()
    b = j["bundles"]
    parent = "none" if report.parent is None else str(report.parent)
    target = f"{parent} -> {report.version}" if report.version is not None else f"{parent}, unchanged"
    lines = [
        f"dest:        {visible(report.dest)} (version {target})",
        f"bundles:     {b['found']:,} found, {b['skipped']:,} skipped (already in the ledger), "
        f"{b['ingested']:,} ingested, {b['quarantined']:,} quarantined, {b['deferred']:,} deferred, "
        f"{b['ignored']:,} ignored",
    ]
    if report.quarantined:
        reasons = Counter(q.reason for q in report.quarantined)
        listed = ", ".join(f"{reason} {n}" for reason, n in sorted(reasons.items()))
        dups = "; ".join(
            f"session {visible(d.session)}: kept {d.kept[:4]}…, quarantined {d.quarantined[:4]}…"
            for d in report.duplicates
        )
        lines.append(f"quarantined: {listed}" + (f" ({dups})" if dups else ""))
        lines.extend(
            f"             {q.reason}: {q.sha256[:12]}… {visible(q.name)}" for q in report.quarantined[:20]
        )
        if len(report.quarantined) > 20:
            lines.append(
                f"             … and {len(report.quarantined) - 20:,} more (optin dataset stats lists them)"
            )
    added = j["added"]
    no_image = sum(p.samples_without_image for p in report.parts)
    lines.append(
        f"added:       {plural(len(added['parts']), 'part')}, {plural(added['samples'], 'sample')} "
        f"({no_image:,} without image), {_gb(added['bytes'])}"
    )
    if report.version is not None:
        lines.append(f"published:   version {report.version} at {report.published_at}")
    else:
        lines.append("published:   nothing (no bundle was ingested or quarantined)")
    if report.purge_failures:
        lines.append(
            f"not purged:  {len(report.purge_failures):,} objects of a withdrawal could not be deleted yet; "
            "the next command tries again (see the messages above)"
        )
    if report.deferred:
        lines.append(
            f"deferred:    {len(report.deferred):,} bundles could not be read now; run the build again "
            "(they are not recorded)"
        )
    return "\n".join(lines)


__all__ = ["render_build"]
