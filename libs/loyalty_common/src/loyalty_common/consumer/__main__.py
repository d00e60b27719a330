"""Operator commands for consumer groups' blocked keys (see ``inbox``'s module doc).

    python -m loyalty_common.consumer blocked [--group G]
    python -m loyalty_common.consumer unblock --group G --key K

The database is DATABASE_URL's unless --database-url is given.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys

from loyalty_common.consumer.inbox import blocked_keys, unblock
from loyalty_common.db import connect


async def _main(args: argparse.Namespace) -> int:
    conn = await connect(args.database_url)
    try:
        if args.command == "blocked":
            for row in await blocked_keys(conn, args.group):
                print(
                    f"{row.group_name}\t{row.key}\tbehind {row.event_id}"
                    f" ({row.topic}/{row.partition}/{row.offset})\theld back {row.held_back}"
                    f"\tsince {row.blocked_at.isoformat()}\t{row.reason}"
                )
            return 0
        behind = await unblock(conn, args.group, args.key)
        if behind is None:
            print(f"{args.key} is not blocked in {args.group}", file=sys.stderr)
            return 1
        print(
            f"unblocked {args.key} in {args.group} (was behind {behind}); re-publish its"
            " dead-lettered and parked messages now"
        )
        return 0
    finally:
        await conn.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m loyalty_common.consumer")
    parser.add_argument("--database-url", default=os.environ.get("DATABASE_URL"))
    commands = parser.add_subparsers(dest="command", required=True)
    listing = commands.add_parser("blocked", help="list blocked keys")
    listing.add_argument("--group")
    release = commands.add_parser("unblock", help="let a group apply a key's events again")
    release.add_argument("--group", required=True)
    release.add_argument("--key", required=True)
    args = parser.parse_args(argv)
    if not args.database_url:
        parser.error("set DATABASE_URL or pass --database-url")
    return asyncio.run(_main(args))


if __name__ == "__main__":
    raise SystemExit(main())
