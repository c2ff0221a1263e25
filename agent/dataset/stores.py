"""``open_dest``: the DEST a command line names, a local folder or ``s3://bucket/prefix``.

Apart from :mod:`agent.dataset.dest` (the interface) so that neither store module is loaded
before it is needed (a local build never imports boto3) and no import goes in a circle.
"""

from __future__ import annotations

from pathlib import Path

from agent.dataset.dest import Dest
from agent.errors import DestUnusable

__all__ = ["open_dest"]


def open_dest(where: str) -> Dest:
    """The DEST ``where`` names: ``s3://bucket/prefix`` or a local folder (created 0700 if missing).

    :raises DestUnusable: the folder is a link or another user's, the bucket or credentials are wrong.
    """
    if where.startswith("s3://"):
        from agent.dataset.dest_s3 import S3Dest

        return S3Dest.open(where)
    if not where.strip() or "://" in where:
        msg = f"DEST {where!r} is neither a local folder nor s3://bucket/prefix. Fix: give one of those"
        raise DestUnusable(msg)
    from agent.dataset.dest_local import LocalDest

    return LocalDest.open(Path(where))
