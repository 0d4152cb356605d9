"""`encfs search` (by name and by what files are) and `encfs metadata-schema …` (typed
client-metadata keys): the same service calls as /.search and setfattr on the mount."""

from __future__ import annotations

import json
from pathlib import Path

import click

from encfs.cli import fail, service_for, store_option
from encfs.errors import AccessDenied
from encfs.metadata_schema import MetadataSchema
from encfs.model import Actor, Kind
from encfs.names import printable


@click.command()
@click.argument("query", required=False, metavar="TEXT")
@click.option("--kind", type=click.Choice([k.value for k in Kind]), default=None, help="Only this kind.")
@click.option("--where", "expressions", multiple=True, metavar="EXPR",
              help="A filter such as width>=1024, size>5MB, created>2026-01-01, in:DATASET, not-in:DATASET, "
                   "under:/FOLDER, meta.KEY=V, meta.KEY>0.8, meta.KEY~text (repeat, or join with commas).")
@click.option("--in-dataset/--not-in-dataset", "in_dataset", default=None,
              help="Only files in some Dataset, or only files in none.")
@click.option("--limit", type=click.IntRange(min=1), default=None, help="Stop after N files.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON lines.")
@store_option
def search(query: str | None, kind: str | None, expressions: tuple[str, ...], in_dataset: bool | None,
           limit: int | None, as_json: bool, store_dir: Path | None) -> None:
    """Find files whose name contains TEXT and that pass every --where filter, in every
    folder. Without --limit they are printed by path; with it, as they are found."""
    text, wanted = query, [*expressions, *([f"kind={kind}"] if kind else [])]
    with service_for(store_dir) as service:
        hits = service.find(Actor.local(), text, wanted, in_dataset, limit)
        if limit is None:
            hits = iter(sorted(hits, key=lambda hit: hit.path))
        out = click.get_text_stream("stdout")
        printed = 0
        for hit in hits:
            if as_json:
                out.write(json.dumps({"path": hit.path, "kind": hit.item.media.kind.value,
                                      "size": hit.item.size}) + "\n")
            else:
                out.write(hit.path + "\n")
            out.flush()
            printed += 1
        if not printed:
            shown = ",".join(([text] if text else []) + wanted)
            click.echo(f"no files match '{printable(shown)}'", err=True)


@click.group("metadata-schema")
def metadata_schema() -> None:
    """Declare client-metadata keys with a type (number, text, boolean, datetime, enum)."""


def schema_of(service: object) -> MetadataSchema:
    schema = getattr(service, "metadata_schema", None)
    if not isinstance(schema, MetadataSchema):
        fail(AccessDenied("the metadata schema is kept by the store's owner"))
    return schema


@metadata_schema.command("add")
@click.argument("key")
@click.argument("type_name", metavar="TYPE")
@click.option("--values", default="", help="An enum's values, comma-separated.")
@store_option
def schema_add(key: str, type_name: str, values: str, store_dir: Path | None) -> None:
    """Declare KEY of TYPE (number, text, boolean, datetime or enum); files' metadata is
    then checked against it and indexed by it."""
    with service_for(store_dir) as service:
        declared = schema_of(service).add(Actor.local(), key, type_name,
                                          [v.strip() for v in values.split(",") if v.strip()])
        click.echo(f"declared {declared.describe()}")


@metadata_schema.command("ls")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@store_option
def schema_ls(as_json: bool, store_dir: Path | None) -> None:
    """List the declared keys: KEY, TYPE and an enum's values."""
    with service_for(store_dir) as service:
        keys = schema_of(service).declared()
        if as_json:
            listed = [{"key": k.key, "type": k.type, "values": k.values} for k in keys]
            click.echo(json.dumps(listed, indent=2))
            return
        for declared in keys:
            click.echo(declared.describe())


@metadata_schema.command("rm")
@click.argument("key")
@store_option
def schema_rm(key: str, store_dir: Path | None) -> None:
    """Forget KEY's type: its values stay, free-form (searchable as text)."""
    with service_for(store_dir) as service:
        schema_of(service).remove(Actor.local(), key)
        click.echo(f"removed {key}")
