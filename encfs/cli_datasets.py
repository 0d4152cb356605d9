"""`encfs dataset …` and `encfs project …`: the same Dataset and Project actions as
/.datasets and /.projects on the mount, over the same service."""

from __future__ import annotations

import json
from pathlib import Path

import click

from encfs.cli import fail, files_path, service_for, store_option
from encfs.datasets import DUPLICATE_POLICIES
from encfs.errors import NotFound
from encfs.model import Actor


@click.group()
def dataset() -> None:
    """Create Datasets, add and remove files, sync them with folders."""


@dataset.command("create")
@click.argument("name")
@click.argument("paths", nargs=-1)
@click.option("--description", default="", help="What the Dataset is for.")
@click.option("--add", "add", is_flag=True, help="Add PATHS (files; folders whole) to the new Dataset.")
@click.option("--sync", "sync", default=None, metavar="FOLDER", help="Sync with FOLDER.")
@click.option("--mirrored", is_flag=True, help="Create the Dataset with its own folder (/NAME or --sync).")
@click.option("--duplicates", type=click.Choice(DUPLICATE_POLICIES), default="skip", show_default=True)
@store_option
def dataset_create(name: str, paths: tuple[str, ...], description: str, add: bool, sync: str | None,
                   mirrored: bool, duplicates: str, store_dir: Path | None) -> None:
    """Create Dataset NAME: standard, with files (--add PATHS…), synced or mirrored."""
    if paths and not add:
        raise click.UsageError("give --add to add PATHS to the new Dataset")
    if add and not paths:
        raise click.UsageError("--add needs PATHS")
    with service_for(store_dir) as service:
        folder = files_path(service, sync) if sync else None
        adding = [files_path(service, p) for p in paths]
        created = service.create_dataset(Actor.local(), name, description, adding, sync=folder,
                                         mirrored=mirrored, duplicates=duplicates)
        summary = service.dataset_summary(Actor.local(), created.name)
        kind = "mirrored" if created.mirrored else "synced" if summary["synced_folder"] else "standard"
        where = f" with folder {summary['synced_folder']}" if summary["synced_folder"] else ""
        click.echo(f"created {kind} Dataset '{name}'{where}: {summary['files']} files")


@dataset.command("ls")
@click.argument("name", required=False)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@store_option
def dataset_ls(name: str | None, as_json: bool, store_dir: Path | None) -> None:
    """List the Datasets, or the files of Dataset NAME (view name and path)."""
    with service_for(store_dir) as service:
        actor = Actor.local()
        if name is None:
            datasets = service.list_datasets(actor)
            if as_json:
                click.echo(json.dumps(datasets, indent=2))
            for entry in datasets if not as_json else []:
                sync = f"  {'mirrors' if entry['mirrored'] else 'synced with'} {entry['synced_folder']}" \
                    if entry["synced_folder"] else ""
                projects = f"  projects: {', '.join(entry['projects'])}" if entry["projects"] else ""
                click.echo(f"{entry['name']}  ({entry['files']} files){sync}{projects}")
            return
        files = service.dataset_files(actor, name)
        if as_json:
            click.echo(json.dumps([{"name": view, "path": path} for view, path in files], indent=2))
            return
        for view, path in files:
            click.echo(f"{view}\t{path}")


@dataset.command("add")
@click.argument("name")
@click.argument("paths", nargs=-1, required=True)
@click.option("--duplicates", type=click.Choice(DUPLICATE_POLICIES), default="skip", show_default=True,
              help="A file already in the Dataset is skipped, or fails the whole command.")
@store_option
def dataset_add(name: str, paths: tuple[str, ...], duplicates: str, store_dir: Path | None) -> None:
    """Add files (folders: everything in them) to Dataset NAME, in one step."""
    with service_for(store_dir) as service:
        added, skipped = service.add_to_dataset(Actor.local(), name, [files_path(service, p) for p in paths],
                                                duplicates)
        note = f" ({skipped} already there, skipped)" if skipped else ""
        click.echo(f"added {added} files to Dataset '{name}'{note}")


@dataset.command("remove")
@click.argument("name")
@click.argument("paths", nargs=-1, required=True)
@store_option
def dataset_remove(name: str, paths: tuple[str, ...], store_dir: Path | None) -> None:
    """Take files out of Dataset NAME (they stay in their folders and other Datasets)."""
    with service_for(store_dir) as service:
        removed = service.remove_from_dataset(Actor.local(), name, [files_path(service, p) for p in paths])
        click.echo(f"removed {removed} files from Dataset '{name}'")


@dataset.command("rename")
@click.argument("name")
@click.argument("new_name")
@store_option
def dataset_rename(name: str, new_name: str, store_dir: Path | None) -> None:
    """Rename Dataset NAME."""
    with service_for(store_dir) as service:
        service.rename_dataset(Actor.local(), name, new_name)
        click.echo(f"renamed Dataset '{name}' to '{new_name}'")


@dataset.command("rm")
@click.argument("name")
@click.option("--force", is_flag=True, help="Also when Projects use it (it is detached from them).")
@store_option
def dataset_rm(name: str, force: bool, store_dir: Path | None) -> None:
    """Delete Dataset NAME. Its files stay in Files."""
    with service_for(store_dir) as service:
        dropped = service.delete_dataset(Actor.local(), name, force=force)
        click.echo(f"deleted Dataset '{name}' ({dropped} files stay in their folders)")


@dataset.command("sync")
@click.argument("name")
@click.argument("folder_path", metavar="FOLDER")
@store_option
def dataset_sync(name: str, folder_path: str, store_dir: Path | None) -> None:
    """Sync Dataset NAME with FOLDER: from now on its files are the folder's."""
    with service_for(store_dir) as service:
        service.set_sync(Actor.local(), name, files_path(service, folder_path))
        click.echo(f"Dataset '{name}' is synced with {files_path(service, folder_path)}")


@dataset.command("unsync")
@click.argument("name")
@store_option
def dataset_unsync(name: str, store_dir: Path | None) -> None:
    """Turn sync off: the Dataset keeps its current files as ordinary links."""
    with service_for(store_dir) as service:
        service.set_sync(Actor.local(), name, None)
        click.echo(f"Dataset '{name}' is no longer synced; its files stay")


@dataset.command("upgrade")
@click.argument("name")
@store_option
def dataset_upgrade(name: str, store_dir: Path | None) -> None:
    """Turn mirrored Dataset NAME into a plain folder and a standard Dataset."""
    with service_for(store_dir) as service:
        service.upgrade_dataset(Actor.local(), name)
        click.echo(f"Dataset '{name}' is now a standard Dataset; its folder is a plain folder")


@dataset.command("describe")
@click.argument("name")
@click.argument("description")
@store_option
def dataset_describe(name: str, description: str, store_dir: Path | None) -> None:
    """Set the description of Dataset NAME."""
    with service_for(store_dir) as service:
        path = f"/.datasets/{name}"
        service.set_attribute(Actor.local(), path, "user.encord.description",
                              description.encode("utf-8", "surrogateescape"))
        click.echo(f"described Dataset '{name}'")


# ---------------------------------------------------------------- projects


@click.group()
def project() -> None:
    """Create Projects and attach Datasets to them."""


@project.command("create")
@click.argument("name")
@click.option("--description", default="", help="What the Project is for.")
@click.option("--dataset", "datasets", multiple=True, help="Attach this Dataset (repeatable).")
@store_option
def project_create(name: str, description: str, datasets: tuple[str, ...], store_dir: Path | None) -> None:
    """Create Project NAME."""
    with service_for(store_dir) as service:
        service.create_project(Actor.local(), name, description, datasets)
        attached = f" with {', '.join(datasets)}" if datasets else ""
        click.echo(f"created Project '{name}'{attached}")


@project.command("attach")
@click.argument("name")
@click.argument("datasets", nargs=-1, required=True)
@store_option
def project_attach(name: str, datasets: tuple[str, ...], store_dir: Path | None) -> None:
    """Attach Datasets to Project NAME: their files show in it."""
    with service_for(store_dir) as service:
        for dataset_name in datasets:
            service.attach_dataset(Actor.local(), name, dataset_name)
            click.echo(f"attached Dataset '{dataset_name}' to Project '{name}'")


@project.command("detach")
@click.argument("name")
@click.argument("datasets", nargs=-1, required=True)
@store_option
def project_detach(name: str, datasets: tuple[str, ...], store_dir: Path | None) -> None:
    """Detach Datasets from Project NAME (the Datasets and files stay)."""
    with service_for(store_dir) as service:
        for dataset_name in datasets:
            service.detach_dataset(Actor.local(), name, dataset_name)
            click.echo(f"detached Dataset '{dataset_name}' from Project '{name}'")


@project.command("ls")
@click.argument("name", required=False)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@store_option
def project_ls(name: str | None, as_json: bool, store_dir: Path | None) -> None:
    """List the Projects, or the files Project NAME shows (Dataset, view name, path)."""
    with service_for(store_dir) as service:
        actor = Actor.local()
        projects = service.list_projects(actor)
        if name is None:
            if as_json:
                click.echo(json.dumps(projects, indent=2))
                return
            for entry in projects:
                click.echo(f"{entry['name']}  datasets: {', '.join(entry['datasets']) or '-'}")
            return
        chosen = [p for p in projects if p["name"] == name]
        if not chosen:
            fail(NotFound(f"no Project is named '{name}'"))
        rows = [(d, view, path) for d in chosen[0]["datasets"] for view, path in
                service.dataset_files(actor, d)]
        if as_json:
            click.echo(json.dumps([{"dataset": d, "name": v, "path": p} for d, v, p in rows], indent=2))
            return
        for dataset_name, view, path in rows:
            click.echo(f"{dataset_name}/{view}\t{path}")


@project.command("rm")
@click.argument("name")
@store_option
def project_rm(name: str, store_dir: Path | None) -> None:
    """Delete Project NAME (its Datasets and files stay)."""
    with service_for(store_dir) as service:
        service.delete_project(Actor.local(), name)
        click.echo(f"deleted Project '{name}'")
