"""What users declare: ``@asset``, ``@check``, ``source``, ``Definitions`` and the small values around them.

Declarations only *describe*. Nothing here touches storage or the clock; the graph module turns a
``Definitions`` into a validated DAG, and everything downstream works from that.
"""

from __future__ import annotations

import inspect
import re
import sys
import typing
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from .durations import parse_duration
from .errors import DefinitionError
from .mappings import PartitionMapping
from .partitions import PartitionsDefinition

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
BackfillPolicy = Literal["per_partition", "single_run"]


@dataclass(frozen=True, slots=True)
class Retry:
    """Retry policy: up to ``max_attempts`` attempts in all, waiting ``delay * backoff**(n-1)`` seconds
    (capped at ``max_delay``) before attempt ``n+1``, spread by ``jitter`` (a fraction of the delay) so
    that many failing partitions do not retry in lockstep."""

    max_attempts: int = 1
    delay: float = 1.0
    backoff: float = 2.0
    max_delay: float = 300.0
    jitter: float = 0.5

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise DefinitionError(f"Retry(max_attempts={self.max_attempts}) must allow at least one attempt")
        if self.delay < 0 or self.max_delay < 0 or self.backoff < 1 or not 0 <= self.jitter <= 1:
            raise DefinitionError(f"invalid {self!r}: need delay, max_delay >= 0, backoff >= 1, 0 <= jitter <= 1")


@dataclass(frozen=True, slots=True)
class Output:
    """Return value wrapper that attaches metadata or an explicit data version to a value."""

    value: Any
    metadata: Mapping[str, Any] | None = None
    data_version: str | None = None


class Failure(Exception):
    """Raised by an asset to fail its step with a message; ``retry=False`` skips remaining attempts."""

    def __init__(self, message: str, *, retry: bool = True) -> None:
        super().__init__(message)
        self.retry = retry


def _is_pydantic_model(annotation: object) -> bool:
    # A pydantic model class exists only once pydantic is imported; a project without config models
    # never makes assetflow import it (a fifth of a `plan` command's start-up).
    pydantic = sys.modules.get("pydantic")
    return pydantic is not None and isinstance(annotation, type) and issubclass(annotation, pydantic.BaseModel)


def _type_hints(fn: Callable[..., Any]) -> dict[str, Any]:
    # String annotations (``from __future__ import annotations``) need resolving; a hint that cannot be
    # resolved is simply not a config model or a context.
    try:
        return typing.get_type_hints(fn)
    except Exception:
        return {k: v for k, v in getattr(fn, "__annotations__", {}).items() if not isinstance(v, str)}


@dataclass(frozen=True, slots=True)
class Signature:
    """How an asset or check function wants to be called."""

    context: str | None
    config: tuple[str, type] | None
    inputs: tuple[str, ...]
    optional: frozenset[str]


def read_signature(fn: Callable[..., Any], owner: str) -> Signature:
    """Classify ``fn``'s parameters into context, config model and upstream inputs."""
    from .context import Context

    hints = _type_hints(fn)
    context = None
    config = None
    inputs: list[str] = []
    optional: set[str] = set()
    for param in inspect.signature(fn).parameters.values():
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            raise DefinitionError(f"asset '{owner}': *args/**kwargs parameters are not supported")
        hint = hints.get(param.name)
        if hint is Context or (hint is None and param.name in ("ctx", "context")):
            context = param.name
        elif _is_pydantic_model(hint):
            config = (param.name, hint)
        else:
            inputs.append(param.name)
            if param.default is not param.empty:
                optional.add(param.name)
    return Signature(context, config, tuple(inputs), frozenset(optional))


@dataclass(frozen=True, eq=False)
class AssetDef:
    """A declared asset: a function whose return value is stored and versioned per partition."""

    name: str
    fn: Callable[..., Any]
    partitions: PartitionsDefinition | None = None
    deps: Mapping[str, PartitionMapping | None] = field(default_factory=dict)
    group: str = "default"
    retry: Retry = Retry()
    timeout: float | None = None
    pool: str | None = None
    freshness: float | None = None
    tags: Mapping[str, str] = field(default_factory=dict)
    code_version: str | None = None
    backfill: BackfillPolicy = "per_partition"
    description: str | None = None
    signature: Signature | None = None

    is_source = False

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Call the underlying function directly (handy in unit tests of the user's own logic)."""
        return self.fn(*args, **kwargs)


@dataclass(frozen=True, eq=False)
class SourceDef:
    """An external input the pipeline observes but does not build (files landing in a folder or bucket).

    ``path`` is an fsspec URL template with ``{partition}`` (and multi-dimension names) in it, or
    ``observe`` a function ``(partition_key) -> str | None`` returning a version (None = absent).
    ``version`` chooses how files are observed: ``"auto"`` (etag/checksum, else size + mtime) or
    ``"content"`` (hash the bytes: touching a file without changing it is not a change).
    """

    name: str
    path: str | None = None
    partitions: PartitionsDefinition | None = None
    observe: Callable[[str | None], str | None] | None = None
    version: Literal["auto", "content"] = "auto"
    storage_options: Mapping[str, Any] = field(default_factory=dict)
    group: str = "sources"
    tags: Mapping[str, str] = field(default_factory=dict)
    description: str | None = None

    is_source = True
    deps: Mapping[str, PartitionMapping | None] = field(default_factory=dict)
    freshness: float | None = None

    def path_for(self, partition: str | None) -> str | None:
        """The location of one partition's file, from the path template."""
        if self.path is None:
            return None
        values: dict[str, str] = {"partition": partition or ""}
        if partition and "|" in partition and hasattr(self.partitions, "split"):
            values.update(self.partitions.split(partition))  # type: ignore[union-attr]
        return self.path.format(**values)


@dataclass(frozen=True, eq=False)
class CheckDef:
    """A data-quality check on one asset; ``blocking`` failures stop downstream work."""

    name: str
    asset: str
    fn: Callable[..., Any]
    blocking: bool = False
    description: str | None = None


def _check_name(kind: str, name: str) -> str:
    if not _NAME.match(name):
        raise DefinitionError(f"invalid {kind} name {name!r}: use letters, digits and underscores")
    return name


def _retry_policy(retries: int | Retry | None) -> Retry:
    if retries is None:
        return Retry()
    if isinstance(retries, Retry):
        return retries
    if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
        raise DefinitionError(f"retries={retries!r}: expected a non-negative int or af.Retry(...)")
    return Retry(max_attempts=retries + 1)


def asset(
    fn: Callable[..., Any] | None = None,
    *,
    name: str | None = None,
    partitions: PartitionsDefinition | None = None,
    deps: Mapping[str, PartitionMapping | None] | Iterable[str] | None = None,
    group: str = "default",
    retries: int | Retry | None = None,
    timeout: float | str | None = None,
    pool: str | None = None,
    freshness: float | str | None = None,
    tags: Mapping[str, str] | None = None,
    code_version: str | None = None,
    backfill: BackfillPolicy = "per_partition",
) -> Any:
    """Declare an asset. Usable bare (``@asset``) or with options (``@asset(partitions=daily)``).

    Parameters named like another asset are its upstream inputs; ``deps`` sets their partition
    mapping or adds order-only upstreams whose value is not passed. ``backfill="single_run"`` calls
    the function once per contiguous range of partitions (``ctx.partition_keys``).
    """

    def wrap(f: Callable[..., Any]) -> AssetDef:
        asset_name = _check_name("asset", name or f.__name__)
        dep_map: dict[str, PartitionMapping | None] = (
            dict(deps) if isinstance(deps, Mapping) else {d: None for d in (deps or ())}
        )
        if backfill not in ("per_partition", "single_run"):
            raise DefinitionError(f"asset '{asset_name}': backfill={backfill!r} must be 'per_partition' or 'single_run'")
        if backfill == "single_run" and partitions is None:
            raise DefinitionError(f"asset '{asset_name}': backfill='single_run' needs partitions")
        return AssetDef(
            name=asset_name,
            fn=f,
            partitions=partitions,
            deps=dep_map,
            group=_check_name("group", group),
            retry=_retry_policy(retries),
            timeout=parse_duration(timeout, what=f"timeout of asset '{asset_name}'"),
            pool=pool,
            freshness=parse_duration(freshness, what=f"freshness of asset '{asset_name}'"),
            tags={str(k): str(v) for k, v in (tags or {}).items()},
            code_version=code_version,
            backfill=backfill,
            description=inspect.getdoc(f),
            signature=read_signature(f, asset_name),
        )

    return wrap(fn) if fn is not None else wrap


def check(asset_name: str, *, name: str | None = None, blocking: bool = False) -> Callable[[Callable[..., Any]], CheckDef]:
    """Declare a data-quality check on ``asset_name``. The function receives the asset's value (by a
    parameter named like the asset, or its only parameter) and returns ``bool`` or ``(bool, metadata)``."""

    def wrap(f: Callable[..., Any]) -> CheckDef:
        return CheckDef(
            name=_check_name("check", name or f.__name__),
            asset=asset_name,
            fn=f,
            blocking=blocking,
            description=inspect.getdoc(f),
        )

    return wrap


def source(
    name: str,
    *,
    path: str | None = None,
    partitions: PartitionsDefinition | None = None,
    observe: Callable[[str | None], str | None] | None = None,
    version: Literal["auto", "content"] = "auto",
    storage_options: Mapping[str, Any] | None = None,
    group: str = "sources",
    tags: Mapping[str, str] | None = None,
) -> SourceDef:
    """Declare an external input. A parameter named like the source receives the partition's path."""
    if (path is None) == (observe is None):
        raise DefinitionError(f"source '{name}': give exactly one of path= or observe=")
    if version not in ("auto", "content"):
        raise DefinitionError(f"source '{name}': version={version!r} must be 'auto' or 'content'")
    return SourceDef(
        name=_check_name("source", name),
        path=path,
        partitions=partitions,
        observe=observe,
        version=version,
        storage_options=dict(storage_options or {}),
        group=_check_name("group", group),
        tags={str(k): str(v) for k, v in (tags or {}).items()},
    )


def _caller_file(depth: int = 2) -> Path | None:
    frame = sys._getframe(depth)
    file = frame.f_globals.get("__file__")
    return Path(file).resolve() if file else None


class Definitions:
    """The set of assets, sources, checks and pools that make up one project."""

    def __init__(
        self,
        assets: Iterable[AssetDef | SourceDef] = (),
        checks: Iterable[CheckDef] = (),
        pools: Mapping[str, int] | None = None,
        *,
        root: str | Path | None = None,
    ) -> None:
        self.assets: dict[str, AssetDef | SourceDef] = {}
        for a in assets:
            if not isinstance(a, (AssetDef, SourceDef)):
                raise DefinitionError(f"Definitions(assets=...) got {a!r}: decorate functions with @af.asset")
            if a.name in self.assets:
                raise DefinitionError(f"two assets are named '{a.name}'")
            self.assets[a.name] = a
        self.checks: dict[str, CheckDef] = {}
        for c in checks:
            if c.name in self.checks:
                raise DefinitionError(f"two checks are named '{c.name}'")
            self.checks[c.name] = c
        self.pools = dict(pools or {})
        for pool, limit in self.pools.items():
            if not isinstance(limit, int) or limit < 1:
                raise DefinitionError(f"pool '{pool}' limit {limit!r} must be a positive int")
        # Where the definitions live decides the project root (default store and data locations) and
        # lets worker processes re-import them.
        self.source_file = _caller_file()
        self.module_name: str | None = sys._getframe(1).f_globals.get("__name__")
        self._root = Path(root).resolve() if root is not None else None

    @property
    def root(self) -> Path:
        """Project root: ``root=`` if given, else the nearest folder with a pyproject.toml above the
        file that built these definitions, else that file's folder (the working directory in a REPL)."""
        if self._root is not None:
            return self._root
        if self.source_file is None:
            return Path.cwd()
        for parent in [self.source_file.parent, *self.source_file.parents]:
            if (parent / "pyproject.toml").exists():
                return parent
        return self.source_file.parent
