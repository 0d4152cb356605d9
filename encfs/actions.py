"""User actions: a service method marked `@action` records the refusals it raises
(in `/.encfs/errors` and the log), once, by the outermost action."""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from typing import ParamSpec, TypeVar

from encfs.errors import DamagedMetadata, EncfsError

P = ParamSpec("P")
R = TypeVar("R")

_actions = threading.local()


def action(operation: str) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Mark a service method as a user action: a refusal it raises is recorded once,
    by the outermost action (an upload that creates an item is one action)."""

    def wrap(method: Callable[P, R]) -> Callable[P, R]:
        @functools.wraps(method)
        def run(*args: P.args, **kwargs: P.kwargs) -> R:
            depth = getattr(_actions, "depth", 0)
            _actions.depth = depth + 1
            try:
                return method(*args, **kwargs)
            except DamagedMetadata:
                raise  # a fault, not a refusal: nothing is written to damaged metadata
            except EncfsError as exc:
                service, actor = args[0], args[1]
                if not exc.path and len(args) > 2 and isinstance(args[2], str):
                    exc.path = "/" + args[2].strip("/")
                if depth == 0:
                    service.record_refusal(actor, operation, exc)  # type: ignore[attr-defined]
                raise
            finally:
                _actions.depth = depth

        return run

    return wrap
