"""The only way to get a Provider: by name, for a job record, or for a project's target.

Back ends register a factory under the name their job records carry (`local`, `azure`); tests
register fakes the same way (`registered(...)`), so every front end reaches them unchanged.
Factories import their back end lazily: looking one up costs nothing until it is used.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path

from ..core.errors import AitkError
from ..core.jobs import JobRecord, JobStore
from .base import Provider

Factory = Callable[[JobStore, Callable[[str], None] | None], Provider]
_factories: dict[str, Factory] = {}


def register(name: str, factory: Factory) -> None:
    """Make `name` resolve to `factory(store, notify)`; replaces an earlier registration."""
    _factories[name] = factory


def unregister(name: str) -> None:
    _factories.pop(name, None)


@contextlib.contextmanager
def registered(name: str, factory: Factory) -> Iterator[None]:
    """`name` resolves to `factory` inside the block, to what it was before afterwards."""
    before = _factories.get(name)
    register(name, factory)
    try:
        yield
    finally:
        if before is None:
            unregister(name)
        else:
            register(name, before)


def names() -> list[str]:
    return sorted(_factories)


def get(name: str, store: JobStore | None = None, notify: Callable[[str], None] | None = None) -> Provider:
    factory = _factories.get(name)
    if factory is None:
        raise AitkError(f"no job back end named {name!r} in this aitk", f"known: {', '.join(names())}")
    return factory(store or JobStore(), notify)


def for_record(rec: JobRecord, store: JobStore | None = None,
               notify: Callable[[str], None] | None = None) -> Provider:
    """The back end that runs (or ran) this job."""
    return get(rec.provider, store, notify)


def for_project(project, kind: str = "finetune", store: JobStore | None = None,
                notify: Callable[[str], None] | None = None) -> Provider:
    """Where a `kind` job of this project runs: its `target.where`, or this machine for the kinds
    that back end does not run (an Azure project still exports and evaluates here)."""
    if isinstance(project, (str, Path)):
        from ..core.project import load_project

        project = load_project(project)
    target = get(project.settings.target.where, store, notify)
    return target if kind in target.kinds else get("local", target.store, notify)


def _local(store: JobStore, notify) -> Provider:
    from .local import LocalProvider

    return LocalProvider(store)


def _azure(store: JobStore, notify) -> Provider:
    from .azure.provider import AzureProvider

    return AzureProvider(store, notify=notify)


register("local", _local)
register("azure", _azure)
