"""``optin keys init | show | change-passphrase``: the volunteer's key pair, and their volunteer id."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from agent.cli.output import print_json

if TYPE_CHECKING:
    from agent.paths import Dirs

__all__ = ["cmd_keys"]


def cmd_keys(args: argparse.Namespace) -> int:
    from agent.paths import dirs
    from agent.store import keys

    d = dirs()
    if args.action == "change-passphrase":
        path = keys.change_passphrase(d)
        print(f"optin: the identity in {path} is now protected by the new passphrase")
        return 0
    if args.action == "init":
        keys.init_keys(d, force=args.force, storage=args.storage)
        if not args.json:
            print("optin: key pair created")
    info = keys.key_info(d)
    text = keys.describe(d)
    if args.volunteer_id:
        found = _volunteer_id(d)
        info["volunteer"] = found
        where = f"study {found['study']}: the id in every bundle you export to it"
        text += f"\nvolunteer id:  {found['id']} ({where})"
        text += f"\n               {found['v1_id']} (in bundles exported by optin 0.1.0)"
    if args.json:
        print_json(info)
    else:
        print(text)
    return 0


def _volunteer_id(d: Dirs) -> dict[str, str]:
    """The volunteer's pseudonym for the installed study (unlocks the identity)."""
    from agent.store import keys, signing
    from agent.study import installed_study

    study = installed_study(d)
    identity = keys.load_identity(d)
    return {
        "study": study.id,
        "id": signing.volunteer_id(identity, study.id),
        # bundles of optin 0.1.0 (optin-bundle/1) carry this one: a withdrawal names both
        "v1_id": signing.v1_volunteer_id(identity, study.id),
    }
