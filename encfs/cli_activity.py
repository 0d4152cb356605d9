"""`encfs activity FOLDER [--since T] [--follow] [--json]`: what `FOLDER/.activity`
shows on a mount, from the command line."""

from __future__ import annotations

import json
import re
import signal
import time
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType

import click

from encfs.activity import ActivityLog, text_line
from encfs.caller_gate import admitted
from encfs.cli import files_path, service_for, store_option
from encfs.model import Actor

DURATION = re.compile(r"^(\d+(?:\.\d+)?)\s*([smhd])$")
UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_since(text: str) -> int:
    """A time in ns from an ISO 8601 time (UTC unless it says otherwise) or a
    duration back from now (30s, 10m, 2h, 7d)."""
    duration = DURATION.match(text.strip())
    if duration:
        return time.time_ns() - int(float(duration.group(1)) * UNIT_SECONDS[duration.group(2)] * 1e9)
    try:
        moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise click.BadParameter(
            f"{text!r} is neither a time (2026-12-01T10:00:00Z) nor a duration (30s, 10m, 2h, 7d)"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp() * 1e9)


@click.command()
@click.argument("folder")
@click.option("--since", default=None, metavar="T",
              help="Only changes from T on: a time (2026-12-01T10:00:00Z) or a duration back (10m, 2h).")
@click.option("--follow", is_flag=True, help="Keep printing changes as they happen (until interrupted).")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
@store_option
def activity(folder: str, since: str | None, follow: bool, as_json: bool, store_dir: Path | None) -> None:
    """Show the changes in FOLDER and its subfolders: time, user, action, paths, item."""
    since_ns = parse_since(since) if since is not None else None
    stopping: list[int] = []

    def stop(signum: int, frame: FrameType | None) -> None:
        stopping.append(signum)

    with service_for(store_dir) as service:
        path = files_path(service, folder)
        actor = Actor.local()
        log = ActivityLog(admitted(service, actor, "activity", path))
        if follow:
            signal.signal(signal.SIGTERM, stop)
            signal.signal(signal.SIGINT, stop)
            entries = log.follow(actor, path, since_ns, stop=lambda: bool(stopping))
        else:
            entries = iter(log.entries(actor, path, since_ns))
        for entry in entries:
            click.echo(json.dumps(entry, ensure_ascii=False) if as_json else text_line(entry))
            if follow:
                click.get_text_stream("stdout").flush()
