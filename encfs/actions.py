"""User actions: a service method marked `@action` records the refusals it raises
(in `/.encfs/errors` and the log), once, by the outermost action.

The line names the path the user gave (`rmdir /.datasets/NAME`, not `/NAME`): the
outermost action knows it, so a refusal raised deeper (an inner action given a bare
Dataset name, a lookup that stopped at a missing parent) is recorded with it. A path
below one the user gave (a file inside a folder removed whole) is kept: it says more.
"""

from __future__ import annotations

import functools
import inspect
import threading
from collections.abc import Callable
from typing import Any, ParamSpec, TypeVar

from encfs.errors import DamagedMetadata, EncfsError
from encfs.meta import journal

P = ParamSpec("P")
R = TypeVar("R")
Where = Callable[[dict[str, Any]], list[str | None]]

_actions = threading.local()


def action(operation: str, where: Where | None = None) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Mark a service method as a user action: a refusal it raises is recorded once,
    by the outermost action (an upload that creates an item is one action). `where`
    gives the paths the user named, the main one first, from the method's arguments
    by name; without it, the first argument after the actor is a Files path."""

    def wrap(method: Callable[P, R]) -> Callable[P, R]:
        arguments_of = _argument_reader(method)

        @functools.wraps(method)
        def run(*args: P.args, **kwargs: P.kwargs) -> R:
            depth = getattr(_actions, "depth", 0)
            _actions.depth = depth + 1
            if depth == 0:
                journal.begin_action(operation, getattr(args[1], "name", "?"),
                                     lambda: _given_paths(arguments_of(args, kwargs), where))
            else:
                journal.enter_inner(operation)
            try:
                return method(*args, **kwargs)
            except DamagedMetadata:
                raise  # a fault, not a refusal: nothing is written to damaged metadata
            except EncfsError as exc:
                if depth == 0:
                    given = _given_paths(arguments_of(args, kwargs), where)
                    exc.path = user_path(exc.path, given)
                    service, actor = args[0], args[1]
                    service.record_refusal(actor, operation, exc)  # type: ignore[attr-defined]
                raise
            finally:
                _actions.depth = depth
                if depth == 0:
                    journal.end_action()
                else:
                    journal.leave_inner()

        return run

    return wrap


def _argument_reader(method: Callable[..., Any]) -> Callable[[tuple, dict], dict[str, Any]]:
    """The arguments of a call by parameter name, as `inspect.Signature.bind` gives
    them; for a method without *args or **kwargs by zipping the names (bind costs
    about 50 µs, and every change a user makes asks for it once)."""
    signature = inspect.signature(method)
    names = list(signature.parameters)
    plain = all(p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) for p in signature.parameters.values())
    if not plain:
        return lambda args, kwargs: dict(signature.bind(*args, **kwargs).arguments)

    def read(args: tuple, kwargs: dict) -> dict[str, Any]:
        arguments = dict(zip(names, args, strict=False))
        arguments.update(kwargs)
        return arguments

    return read


def _given_paths(arguments: dict[str, Any], where: Where | None) -> list[str]:
    if where is not None:
        found = where(arguments)
    else:
        first = list(arguments.values())[2] if len(arguments) > 2 else None
        found = [first] if isinstance(first, str) else []
    return ["/" + path.strip("/") for path in found if isinstance(path, str)]


def user_path(found: str, given: list[str]) -> str:
    """The path a refusal is recorded with: `found` (where the refusal arose) when it
    is one the user gave or lies below one; the user's path otherwise."""
    if not given:
        return found
    if found and any(found == path or found.startswith(path.rstrip("/") + "/") for path in given):
        return found
    for path in given:  # `found` is a folder above it: the lookup stopped there
        if found and path.startswith(found.rstrip("/") + "/"):
            return path
    return given[0]


def dataset_path(name: Any) -> str | None:
    return f"/.datasets/{name}" if isinstance(name, str) else None


def project_path(name: Any) -> str | None:
    return f"/.projects/{name}" if isinstance(name, str) else None


def listed(paths: Any) -> list[str]:
    """Paths given as a list or tuple (a generator is used up by the action itself)."""
    return [p for p in paths if isinstance(p, str)] if isinstance(paths, list | tuple) else []
