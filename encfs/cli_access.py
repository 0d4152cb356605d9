"""`encfs user …`, `encfs group …` and `encfs access …`: the organisation's users and
groups, and who has which role on a folder, Dataset or Project (the same actions as
writing `FOLDER/.access` on the mount)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import click

from encfs import remote
from encfs.cli import fail, files_path, service_for, store_option
from encfs.errors import AccessDenied, NotFound
from encfs.meta import access as records
from encfs.model import Actor


def as_option(command: Any) -> Any:
    return click.option("--as", "as_user", default=None, metavar="EMAIL",
                        help="Act as this user (root only): see and do what they may.")(command)


def acting(service: Any, as_user: str | None) -> Actor:
    """The caller, or (for root) the user named with --as."""
    if as_user is None:
        return Actor.local()
    if os.getuid() != 0 or remote.caller() is not None:  # a user's command run by a mount is not root's
        fail(AccessDenied("only root may act as another user (--as)"))
    with service.meta.read() as r:
        record = records.user(r, as_user)
    if record is None:
        fail(NotFound(f"no user {as_user} (see encfs user ls)"))
    if record.get("uid") is None:
        fail(NotFound(f"user {as_user} has no uid: give one with encfs user set {as_user} --uid N"))
    return Actor.from_ids(record["uid"], record["uid"])


# ------------------------------------------------------------------ users


@click.group()
def user() -> None:
    """The organisation's users: each maps one Linux uid to an email."""


def _uid_options(command: Any) -> Any:
    command = click.option("--uid", type=int, default=None,
                           help="The Linux uid that acts as this user.")(command)
    return click.option("--linux-user", default=None, metavar="NAME",
                        help="The Linux user (its uid) that acts as this user.")(command)


@user.command("add")
@click.argument("email")
@click.option("--name", default="", help="The user's name.")
@_uid_options
@click.option("--org-admin", is_flag=True, help="Admin of every folder, Dataset and Project.")
@as_option
@store_option
def user_add(email: str, name: str, uid: int | None, linux_user: str | None, org_admin: bool,
             as_user: str | None, store_dir: Path | None) -> None:
    """Add user EMAIL to the organisation."""
    with service_for(store_dir) as service:
        actor = acting(service, as_user)
        added = service.access_admin.add_user(actor, email, name, uid, linux_user, org_admin)
        click.echo(f"added {describe(added)}")


@user.command("set")
@click.argument("email")
@click.option("--name", default=None, help="The user's name.")
@_uid_options
@click.option("--org-admin/--no-org-admin", default=None, help="Make or unmake an org admin.")
@as_option
@store_option
def user_set(email: str, name: str | None, uid: int | None, linux_user: str | None, org_admin: bool | None,
             as_user: str | None, store_dir: Path | None) -> None:
    """Change user EMAIL's name, uid or org admin role."""
    with service_for(store_dir) as service:
        actor = acting(service, as_user)
        changed = service.access_admin.set_user(actor, email, name, uid, linux_user, org_admin)
        click.echo(f"changed {describe(changed)}")


@user.command("rm")
@click.argument("email")
@as_option
@store_option
def user_rm(email: str, as_user: str | None, store_dir: Path | None) -> None:
    """Remove user EMAIL (and their grants and group memberships)."""
    with service_for(store_dir) as service:
        service.access_admin.remove_user(acting(service, as_user), email)
        click.echo(f"removed user {email}")


@user.command("ls")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@store_option
def user_ls(as_json: bool, store_dir: Path | None) -> None:
    """List the users."""
    with service_for(store_dir) as service:
        users = service.access_admin.users(Actor.local())
    if as_json:
        click.echo(json.dumps([u.record() for u in users], indent=2))
        return
    if not users:
        click.echo("no users: every Linux user of a mount has its POSIX modes only (encfs user add)")
    for found in users:
        click.echo(describe(found))


def describe(found: Any) -> str:
    uid = "no uid" if found.uid is None else f"uid {found.uid}"
    name = f" ({found.name})" if found.name else ""
    return f"{found.email}{name}, {uid}{', org admin' if found.org_admin else ''}"


# ------------------------------------------------------------------ groups


@click.group()
def group() -> None:
    """Groups of users: folder roles can be granted to @GROUP."""


@group.command("add")
@click.argument("name")
@as_option
@store_option
def group_add(name: str, as_user: str | None, store_dir: Path | None) -> None:
    """Create group NAME."""
    with service_for(store_dir) as service:
        service.access_admin.add_group(acting(service, as_user), name)
        click.echo(f"created group {name}")


@group.command("rm")
@click.argument("name")
@as_option
@store_option
def group_rm(name: str, as_user: str | None, store_dir: Path | None) -> None:
    """Remove group NAME (and its grants)."""
    with service_for(store_dir) as service:
        service.access_admin.remove_group(acting(service, as_user), name)
        click.echo(f"removed group {name}")


@group.command("members")
@click.argument("name")
@click.option("--add", "add", multiple=True, metavar="EMAIL", help="Add a member (repeatable).")
@click.option("--remove", "remove", multiple=True, metavar="EMAIL", help="Remove a member (repeatable).")
@as_option
@store_option
def group_members(name: str, add: tuple[str, ...], remove: tuple[str, ...], as_user: str | None,
                  store_dir: Path | None) -> None:
    """Show group NAME's members, after adding and removing some."""
    with service_for(store_dir) as service:
        members = service.access_admin.change_members(acting(service, as_user), name, list(add), list(remove))
    for email in members:
        click.echo(email)


@group.command("ls")
@store_option
def group_ls(store_dir: Path | None) -> None:
    """List the groups and their members."""
    with service_for(store_dir) as service:
        for name, members in service.access_admin.groups(Actor.local()):
            click.echo(f"@{name}: {', '.join(members) or 'no members'}")


# ------------------------------------------------------------------ access


@click.group()
def access() -> None:
    """Who may do what in a folder (viewer, editor, admin), a Dataset or a Project."""


@access.command("ls")
@click.argument("path")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@as_option
@store_option
def access_ls(path: str, as_json: bool, as_user: str | None, store_dir: Path | None) -> None:
    """Show the grants on PATH: its own, the inherited ones, and the org admins."""
    with service_for(store_dir) as service:
        actor = acting(service, as_user)
        target = files_path(service, path)
        if as_json:
            click.echo(json.dumps(service.access_admin.listing(actor, target), indent=2))
        else:
            click.echo(service.access_admin.text(actor, target).decode(), nl=False)


@access.command("grant")
@click.argument("path")
@click.argument("who", metavar="EMAIL|@GROUP")
@click.argument("role", metavar="ROLE")  # the service checks it (a Dataset's roles differ)
@as_option
@store_option
def access_grant(path: str, who: str, role: str, as_user: str | None, store_dir: Path | None) -> None:
    """Give EMAIL or @GROUP a ROLE on PATH (and the folders below it): viewer, editor or
    admin; on a Dataset or Project, viewer or admin."""
    with service_for(store_dir) as service:
        target = files_path(service, path)
        service.access_admin.grant(acting(service, as_user), target, who, role)
        click.echo(f"{who} is {role.lower()} of {target}")


@access.command("revoke")
@click.argument("path")
@click.argument("who", metavar="EMAIL|@GROUP")
@as_option
@store_option
def access_revoke(path: str, who: str, as_user: str | None, store_dir: Path | None) -> None:
    """Take away the grant made to EMAIL or @GROUP on PATH itself."""
    with service_for(store_dir) as service:
        target = files_path(service, path)
        service.access_admin.revoke(acting(service, as_user), target, who)
        click.echo(f"{who} has no grant on {target} any more")
