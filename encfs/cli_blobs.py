"""Blobs in a bucket from the command line: the `encfs init --blobs …` options and
`encfs gc`, which deletes the objects no file uses any more."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from encfs.errors import StoreError
from encfs.meta.room import parse_size

F = TypeVar("F", bound=Callable[..., Any])


def bucket_options(command: F) -> F:
    options = [
        click.option("--blobs", "blobs_url", default=None, metavar="s3://BUCKET/PREFIX",
                     help="Keep file bytes in this bucket (metadata stays local)."),
        click.option("--endpoint-url", default=None,
                     help="The S3 endpoint (default: AWS, or $AWS_ENDPOINT_URL)."),
        click.option("--profile", default=None, help="The AWS profile whose credentials to use."),
        click.option("--region", default=None, help="The bucket's region."),
        click.option("--cache-size", default=None, metavar="SIZE",
                     help="How much blob data to cache on the local disk (default 8GiB; 0: none)."),
        click.option("--cache-dir", type=click.Path(path_type=Path), default=None,
                     help="Where to cache it (default: the store's cache/ folder)."),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def bucket_blobs(blobs_url: str | None, endpoint_url: str | None, profile: str | None, region: str | None,
                 cache_size: str | None, cache_dir: Path | None) -> Any:
    """What `init` was given about a bucket, checked for form (the bucket itself is
    checked by init_store); None for a store that keeps its blobs itself."""
    from encfs.blobs.s3 import BucketPlace
    from encfs.store import DEFAULT_CACHE_SIZE, BucketBlobs

    if blobs_url is None:
        given = [name for name, value in (("--endpoint-url", endpoint_url), ("--profile", profile),
                                          ("--region", region), ("--cache-size", cache_size),
                                          ("--cache-dir", cache_dir)) if value]
        if given:
            raise click.UsageError(f"{', '.join(given)} need --blobs s3://BUCKET/PREFIX")
        return None
    try:
        size = DEFAULT_CACHE_SIZE if cache_size is None else parse_size(cache_size)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--cache-size") from None
    place = BucketPlace.parse(blobs_url, endpoint_url, profile, region)
    return BucketBlobs(place, size, cache_dir.absolute() if cache_dir else None)


@click.command()
@click.option("--grace", default="1h", show_default=True, metavar="DURATION",
              help="Keep unused objects younger than this (e.g. 30s, 10m, 1h): a mount may be "
                   "about to commit one.")
@click.option("--store", "store_dir", type=click.Path(path_type=Path, readable=False), default=None,
              help="Store directory (default: $ENCFS_STORE, else the user data directory).")
def gc(grace: str, store_dir: Path | None) -> None:
    """Delete objects in the store's bucket that no file uses (a store with --blobs)."""
    from encfs.blobs.s3 import S3BlobStore, bucket_problem, collect
    from encfs.cli import fail, service_for

    seconds = parse_duration(grace)
    with service_for(store_dir) as service:
        blobs = service.blobs
        if not isinstance(blobs, S3BlobStore):
            fail(StoreError("this store keeps its blobs itself: there is nothing to collect"))
        try:
            done = collect(blobs, seconds)
        except Exception as exc:
            fail(StoreError(f"cannot collect {blobs.place_of.url}: {bucket_problem(exc)}"))
    click.echo(f"deleted {len(done.deleted)} unused objects, aborted {done.aborted} abandoned uploads; "
               f"{done.young} objects younger than {grace} left alone")


UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> float:
    number, unit = text[:-1], text[-1:]
    if unit.isdigit():
        number, unit = text, "s"
    try:
        value = float(number) * UNITS[unit]
    except (KeyError, ValueError):
        raise click.BadParameter(f"{text!r} is not a duration (e.g. 30s, 10m, 1h)",
                                 param_hint="--grace") from None
    if value < 0:
        raise click.BadParameter("a duration cannot be negative", param_hint="--grace")
    return value

