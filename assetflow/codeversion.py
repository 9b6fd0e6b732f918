"""Code versions: a digest of the *logic* an asset runs, blind to how that logic is written down.

An asset is stale when its inputs changed or when the code that computes it changed. "The code
changed" has to mean *the logic changed*: re-wrapping a line, fixing a typo in a comment or a
docstring, or bumping ``@asset(retries=3)`` must not trigger a rebuild of a multi-hour table, while
editing a helper three calls deep, or a module-level ``THRESHOLD = 0.5``, must.

So a version is computed from normalized syntax trees, not from raw text or file hashes:

* the function's source is parsed, the decorators of its ``def`` and every docstring are dropped,
  and the tree is dumped without line/column positions, so comments, blank lines and layout never
  reach the digest, while any edit to statements, default values or annotations does;
* functions and classes of the user's project that it references are folded in, transitively and
  cycle-safely. "The project" is the directory tree holding the nearest ``pyproject.toml``
  (``setup.cfg`` / ``.git``), minus installed packages and virtualenvs, so upgrading a library
  never changes a version -- that is tracked by the environment, not by asset code;
* module-level constants it reads whose values are plain literals are folded in as ``NAME=repr``.

The digest is xxh3-128 over a canonical, sorted serialization: it is the same in every process,
under every hash seed and whatever name a module was imported under. It does depend on the Python
minor version, whose ``ast.dump`` output (and bytecode) may differ.

When the source is unavailable (REPL, ``exec``, C functions) the bytecode is hashed instead, and
``code_version`` never raises for lack of source.
"""

from __future__ import annotations

import ast
import dis
import functools
import inspect
import os
import sys
import textwrap
import threading
import types
import weakref
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import xxhash

__all__ = ["code_version", "project_root_for"]

# Files whose presence marks a project's top directory, checked nearest-first.
_PROJECT_MARKERS = ("pyproject.toml", "setup.cfg", ".git")
# Code under these directories is installed third-party code, wherever they sit.
_INSTALLED_DIR_NAMES = frozenset({"site-packages", "dist-packages"})
# Conventional virtualenv folders *inside* a project: their code is not the user's either.
_VIRTUALENV_DIR_NAMES = frozenset({".venv", "venv", "env"})
# The engine's own modules are never user logic, even when an example project sits in its repository.
_ENGINE_PACKAGE = "assetflow"
# Bumped whenever the serialization changes, so old and new versions can never collide.
_FORMAT_TAG = "assetflow.codeversion/1"

# Literal types whose repr is a faithful, process-independent spelling of the value.
_SCALAR_TYPES = frozenset({int, float, str, bytes, bool, type(None)})
# Extra constant types that only occur inside bytecode (``1j``, ``...``).
_BYTECODE_SCALAR_TYPES = _SCALAR_TYPES | {complex, type(Ellipsis)}

# Attribute chain as written in the source: ``helpers.clean`` -> ("helpers", "clean").
_Chain = tuple[str, ...]
_Exclude = Callable[[object], bool]
_MISSING = object()


def code_version(
    fn: Callable[..., object],
    *,
    project_root: Path | None = None,
    exclude: Callable[[object], bool] | None = None,
) -> str:
    """Return the 32-hex-digit xxh3-128 code version of ``fn``.

    The version covers ``fn``'s normalized source, the project functions and classes it references
    (transitively) and the literal module constants they read. It changes on any logic edit and on
    nothing else: comments, docstrings, formatting and the decorator line do not count.

    ``project_root`` bounds which referenced code counts as the user's; by default it is
    :func:`project_root_for` of ``fn``'s source file. ``exclude(obj)`` returning true skips a
    referenced object entirely (e.g. other asset definitions, whose identity is tracked through
    lineage rather than code); exceptions it raises propagate.

    Results are cached per function object, so the version reflects the code as it was first seen
    in this process.
    """
    key = (None if project_root is None else str(project_root), exclude)
    version = _cached_version(fn, key)
    if version is None:
        version = _compute_version(fn, project_root, exclude)
        _store_version(fn, key, version)
    return version


def project_root_for(path: Path) -> Path:
    """Return the nearest ancestor of ``path`` holding ``pyproject.toml``, ``setup.cfg`` or ``.git``.

    Falls back to the file's own directory (or ``path`` itself if it is a directory) when no
    ancestor is marked. The result is fully resolved (symlinks followed).
    """
    resolved = Path(path).resolve()
    start = resolved if resolved.is_dir() else resolved.parent
    # Not cached: a few stat calls per asset are cheap (versions themselves are cached), and a
    # marker created while the process runs must be seen.
    for candidate in (start, *start.parents):
        if any((candidate / marker).exists() for marker in _PROJECT_MARKERS):
            return candidate
    return start


# --------------------------------------------------------------------------- caching

_LOCK = threading.Lock()
# fn -> {(project_root, exclude): version}. Weak keys: a version must not keep a reloaded module alive.
_VERSIONS: weakref.WeakKeyDictionary[Any, dict[tuple[str | None, _Exclude | None], str]] = (
    weakref.WeakKeyDictionary()
)
# A caller passing a fresh ``exclude`` lambda on every call must not grow a function's entry forever.
_MAX_VERSIONS_PER_FUNCTION = 8


def _cached_version(fn: object, key: tuple[str | None, _Exclude | None]) -> str | None:
    """Return the cached version of ``fn`` under ``key``, or None."""
    try:
        with _LOCK:
            return _VERSIONS.get(fn, {}).get(key)
    except TypeError:  # fn not weak-referenceable, or an unhashable ``exclude``: just don't cache
        return None


def _store_version(fn: object, key: tuple[str | None, _Exclude | None], version: str) -> None:
    """Remember ``version`` for ``fn`` under ``key`` when ``fn`` can be weakly referenced."""
    try:
        with _LOCK:
            per_function = _VERSIONS.setdefault(fn, {})
            if len(per_function) >= _MAX_VERSIONS_PER_FUNCTION:
                per_function.clear()
            per_function[key] = version
    except TypeError:
        pass


# --------------------------------------------------------------------------- the walk


def _compute_version(fn: object, project_root: Path | None, exclude: _Exclude | None) -> str:
    """Compute (uncached) the version of ``fn``: its own entry plus one entry per reachable helper."""
    target, bound_constants = _callable_target(fn)
    root = _project_root_of(target) if project_root is None else str(Path(project_root).resolve())
    walk = _Walk(root, exclude)
    root_entry = walk.entry("root", target, bound_constants)
    # Sorted by content (kind, qualname, code), never by module name: the same file imported as
    # ``helpers`` or ``pkg.helpers`` must give the same version.
    helper_entries = sorted(walk.helper_entries())
    return _digest([_FORMAT_TAG, root_entry, *helper_entries])


class _Walk:
    """One traversal of the code reachable from a root function.

    Objects are visited once each (keyed by identity, so mutual recursion terminates and two
    closures sharing a qualname are still told apart); identities never reach the digest.
    """

    def __init__(self, root: str | None, exclude: _Exclude | None) -> None:
        self._root = root
        self._exclude = exclude
        self._seen: dict[int, object] = {}  # holding the object keeps its id unique during the walk
        self._pending: list[object] = []

    def entry(self, role: str, obj: object, extra_constants: Iterable[str] = ()) -> str:
        """Serialize ``obj`` (code plus the literal constants it reads) and queue its helpers."""
        self._seen.setdefault(id(obj), obj)
        analysis = _analysis_of(obj)
        namespaces = _namespaces(obj)
        constants = set(extra_constants)
        for chain in analysis.references:
            constant = self._follow(chain, namespaces)
            if constant is not None:
                constants.add(constant)
        header = f"{role} {analysis.kind} {analysis.qualname}"
        return "\n".join([header, analysis.code, *sorted(constants)])

    def helper_entries(self) -> list[str]:
        """Serialize every queued helper, including the helpers those helpers reference."""
        entries = []
        while self._pending:
            entries.append(self.entry("helper", self._pending.pop()))
        return entries

    def _follow(self, chain: _Chain, namespaces: _Namespaces) -> str | None:
        """Resolve one reference: return ``label=repr`` for a literal constant, queue a project
        helper, ignore anything else."""
        resolved = _resolve(chain, namespaces, self._root)
        if resolved is None:
            return None
        label, value = resolved
        if self._is_excluded(value):
            return None
        if chain[0].startswith("__") and chain[0].endswith("__"):
            # Module dunders (__file__, __name__) describe where the code sits, not what it does: a
            # checkout at another path must not look like a code change.
            return None
        literal = _literal_repr(value)
        if literal is not None:
            return f"{label}={literal}"
        helper = _project_helper(value, self._root)
        if helper is None or id(helper) in self._seen:
            return None
        if helper is not value and self._is_excluded(helper):
            return None
        self._seen[id(helper)] = helper
        self._pending.append(helper)
        return None

    def _is_excluded(self, obj: object) -> bool:
        """Ask the caller's ``exclude`` about ``obj``."""
        return self._exclude is not None and bool(self._exclude(obj))


# --------------------------------------------------------------------------- name resolution

# (module globals, closure variables) against which a function's names are looked up.
_Namespaces = tuple[Mapping[str, object], Mapping[str, object]]


def _callable_target(fn: object) -> tuple[object, list[str]]:
    """Peel bound methods, ``functools.partial`` and ``functools.wraps`` wrappers off ``fn``.

    The version is about the user's function, not the wrapper a decorator put around it. Literal
    arguments frozen into a partial are logic inputs, so they come back as constants.
    """
    constants: list[str] = []
    for _ in range(100):  # wrappers nest a few levels at most; the bound also stops cycles
        if isinstance(fn, types.MethodType):
            fn = fn.__func__
        elif isinstance(fn, functools.partial):
            constants.extend(_partial_constants(fn))
            fn = fn.func
        else:
            unwrapped = _unwrap(fn)
            if unwrapped is fn:
                break
            fn = unwrapped
    return fn, constants


def _partial_constants(partial: functools.partial[Any]) -> list[str]:
    """``label=repr`` for the literal arguments bound by ``partial``."""
    bound = [(f"partial.args[{i}]", arg) for i, arg in enumerate(partial.args)]
    bound += [(f"partial.keywords[{k!r}]", partial.keywords[k]) for k in sorted(partial.keywords)]
    literals = ((label, _literal_repr(value)) for label, value in bound)
    return [f"{label}={literal}" for label, literal in literals if literal is not None]


def _unwrap(obj: object) -> object:
    """Follow ``__wrapped__`` (``functools.wraps``, ``lru_cache``) to the innermost function."""
    if isinstance(obj, types.FunctionType) and not hasattr(obj, "__wrapped__"):
        return obj  # the common case, on the hot path of every reference
    try:
        return inspect.unwrap(obj)  # type: ignore[arg-type]
    except Exception:  # wrapper cycles, or objects whose __getattr__ misbehaves: keep the object
        return obj


def _project_root_of(target: object) -> str | None:
    """Default project root: the one around ``target``'s source file, None if it has no file."""
    file = _source_file(target)
    if file is None and isinstance(target, types.FunctionType):
        # Code exec'd into a module's namespace still belongs to that module's project.
        file = target.__globals__.get("__file__")
    if not isinstance(file, str):
        return None
    return str(project_root_for(Path(file)))


def _namespaces(obj: object) -> _Namespaces:
    """The globals and closure variables ``obj``'s names refer to."""
    if isinstance(obj, types.FunctionType):
        return obj.__globals__, _closure_values(obj)
    module = sys.modules.get(getattr(obj, "__module__", None) or "")
    return (vars(module) if module is not None else {}), {}


def _closure_values(fn: types.FunctionType) -> dict[str, object]:
    """``fn``'s closure variables by name (``inspect.getclosurevars(fn).nonlocals``, minus its
    failure on a cell that is not bound yet)."""
    values: dict[str, object] = {}
    for name, cell in zip(fn.__code__.co_freevars, fn.__closure__ or ()):
        try:
            values[name] = cell.cell_contents
        except ValueError:  # empty cell: nothing to hash yet
            pass
    return values


def _resolve(chain: _Chain, namespaces: _Namespaces, root: str | None) -> tuple[str, object] | None:
    """Look ``chain`` up: closure first, then globals (builtins are never the user's code), then
    attributes through *project* modules only, so ``helpers.clean`` reaches the function.

    Returns the dotted label actually resolved and the object, or None if the head is unbound.
    """
    module_globals, closure = namespaces
    head = chain[0]
    if head in closure:
        value = closure[head]
    elif head in module_globals:
        value = module_globals[head]
    else:
        return None
    depth = 1
    for attribute in chain[1:]:
        # Only step through project modules: reading a library module's attributes can trigger lazy
        # imports, and nothing found there would be hashed anyway.
        if not _is_project_module(value, root):
            break
        member = vars(value).get(attribute, _MISSING)
        if member is _MISSING:
            break
        value, depth = member, depth + 1
    return ".".join(chain[:depth]), value


def _project_helper(value: object, root: str | None) -> object | None:
    """Return the function or class behind ``value`` if its source lives in the project, else None."""
    if root is None:
        return None
    target = _unwrap(value)
    if not (isinstance(target, types.FunctionType) or inspect.isclass(target)):
        return None
    if _is_engine_module_name(getattr(target, "__module__", None)):
        return None
    file = _source_file(target)
    return target if file is not None and _is_project_file(file, root) else None


def _is_project_module(value: object, root: str | None) -> bool:
    """True if ``value`` is a module (or namespace package) whose files live in the project."""
    if root is None or not isinstance(value, types.ModuleType):
        return False
    if _is_engine_module_name(value.__name__):
        return False
    file = getattr(value, "__file__", None)
    if isinstance(file, str):
        return _is_project_file(file, root)
    # Namespace package: no __file__, only directories.
    directories = getattr(value, "__path__", None) or ()
    return any(_is_project_file(os.path.join(d, "__init__.py"), root) for d in directories)


def _is_engine_module_name(name: object) -> bool:
    """True for ``assetflow`` and its submodules."""
    return isinstance(name, str) and (name == _ENGINE_PACKAGE or name.startswith(_ENGINE_PACKAGE + "."))


# getsourcefile stats the disk; every asset's walk asks again about the same shared helpers.
_SOURCE_FILES: weakref.WeakKeyDictionary[Any, str | None] = weakref.WeakKeyDictionary()


def _source_file(obj: object) -> str | None:
    """``inspect.getsourcefile`` that answers None instead of raising for built-ins (cached)."""
    try:
        with _LOCK:
            if obj in _SOURCE_FILES:
                return _SOURCE_FILES[obj]
    except TypeError:  # not weak-referenceable
        return _uncached_source_file(obj)
    file = _uncached_source_file(obj)
    with _LOCK:
        _SOURCE_FILES[obj] = file
    return file


def _uncached_source_file(obj: object) -> str | None:
    """``inspect.getsourcefile``, None for built-ins and objects without a file."""
    try:
        return inspect.getsourcefile(obj)  # type: ignore[arg-type]
    except (TypeError, OSError):
        return None


@functools.lru_cache(maxsize=4096)
def _real_folder(folder: str) -> str:
    """``os.path.realpath(folder)``, from its parent's (cached): one ``lstat`` per folder instead of
    one per component, since the folders of loaded modules share most of their components."""
    parent, name = os.path.split(folder)
    if not name or parent == folder:
        return os.path.realpath(folder)
    real_parent = _real_folder(parent)
    candidate = f"{real_parent}{name}" if real_parent.endswith(os.sep) else f"{real_parent}{os.sep}{name}"
    if name in (".", "..") or os.path.islink(candidate):
        return os.path.realpath(candidate)  # the parent is resolved: only this step is left to do
    return candidate


@functools.lru_cache(maxsize=4096)
def _links_in(folder: str) -> frozenset[str] | None:
    """The names of the symbolic links in ``folder`` (None if it cannot be listed): one listing, whose
    entry types come without a ``stat`` each, answers for every module file in the folder."""
    try:
        with os.scandir(folder) as entries:
            return frozenset(entry.name for entry in entries if entry.is_symlink())
    except OSError:
        return None


def real_path(file: str) -> str:
    """``os.path.realpath(file)``, resolving each folder once per process: the ~800 modules a project
    loads share ~100 folders, and resolving every path component by component costs ~0.1 s a command
    (and an ``lstat`` per module file still ~4 ms: whether a file is a link comes from its folder's
    listing instead)."""
    # Plain string work, not os.path.join/abspath (~3 µs each, 800 times a command): module files are
    # absolute already, and the folder's realpath normalizes whatever abspath would have.
    folder, name = os.path.split(file if os.path.isabs(file) else os.path.abspath(file))
    if not name:  # a folder given with a trailing separator
        return os.path.realpath(file)
    links = _links_in(folder)
    if name in links if links is not None else os.path.islink(file):
        return os.path.realpath(file)
    real = _real_folder(folder)
    return f"{real}{name}" if real.endswith(os.sep) else f"{real}{os.sep}{name}"


def project_modules(root: str | os.PathLike[str]) -> list[tuple[str, types.ModuleType]]:
    """The loaded modules (sorted by name) whose files are the project's own code under ``root``."""
    real_root = os.path.realpath(root)
    found = []
    for name, module in sorted(sys.modules.items()):
        file = getattr(module, "__file__", None)
        if file and _is_project_file(file, real_root):
            found.append((name, module))
    return found


@functools.lru_cache(maxsize=8192)
def _is_project_file(file: str, root: str) -> bool:
    """True if ``file`` is under ``root`` and is not installed code (site-packages, a virtualenv
    folder inside the project, or the interpreter's own prefix)."""
    folder, sep, _name = file.rpartition(os.sep)
    if sep and folder and os.path.isabs(file) and not _may_hold_project_files(folder, root):
        return False  # the common case (an installed module), decided once per folder
    real = real_path(file)
    if not _is_under(real, root):
        return False
    path = Path(real)
    root_path = Path(root)
    if _INSTALLED_DIR_NAMES.intersection(path.parts):
        return False
    if _VIRTUALENV_DIR_NAMES.intersection(path.relative_to(root_path).parts[:-1]):
        return False
    # A prefix only disqualifies when the project is not itself inside it (e.g. /usr/local/src/app).
    return not any(
        path.is_relative_to(prefix) and not root_path.is_relative_to(prefix)
        for prefix in _interpreter_prefixes()
    )


def _is_under(path: str, root: str) -> bool:
    return path.startswith(root if root.endswith(os.sep) else root + os.sep)


@functools.lru_cache(maxsize=4096)
def _may_hold_project_files(folder: str, root: str) -> bool:
    """False when no file of ``folder`` can resolve under ``root``: the folder resolves elsewhere and
    holds no symbolic link (a link could point anywhere, as a ``flit install --symlink`` one does)."""
    links = _links_in(folder)
    return links is None or bool(links) or _is_under(_real_folder(folder) + os.sep, root)


@functools.lru_cache(maxsize=1)
def _interpreter_prefixes() -> tuple[Path, ...]:
    """The interpreter's installation prefixes (venv and base), resolved."""
    prefixes = (sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix)
    return tuple(sorted({Path(os.path.realpath(p)) for p in prefixes if p}))


# --------------------------------------------------------------------------- analysis of one object


@dataclass(frozen=True)
class _Analysis:
    """What one function or class contributes, independent of project root and ``exclude``."""

    kind: str  # "function", "class", "bytecode", "class-bytecode" or "opaque"
    qualname: str
    code: str  # normalized AST dump, or bytecode fingerprint when there is no source
    references: tuple[_Chain, ...]  # names/attribute chains to resolve, sorted


# Parsing is the expensive part and helpers are shared by many assets: analyse each object once.
_ANALYSES: weakref.WeakKeyDictionary[Any, _Analysis] = weakref.WeakKeyDictionary()


def _analysis_of(obj: object) -> _Analysis:
    """Cached :func:`_analyze`."""
    try:
        with _LOCK:
            cached = _ANALYSES.get(obj)
    except TypeError:  # not weak-referenceable (some built-ins): analysis is cheap for those anyway
        return _analyze(obj)
    if cached is None:
        cached = _analyze(obj)
        with _LOCK:
            _ANALYSES[obj] = cached
    return cached


def _analyze(obj: object) -> _Analysis:
    """Dispatch on what ``obj`` is: Python function, class, or anything else (opaque)."""
    if isinstance(obj, types.FunctionType):
        return _analyze_function(obj)
    if inspect.isclass(obj):
        return _analyze_class(obj)
    description = _describe(obj)
    return _Analysis("opaque", description, description, ())


def _analyze_function(fn: types.FunctionType) -> _Analysis:
    """Normalized source of ``fn`` and the global/closure names it reads; bytecode if no source."""
    node = _function_node(fn)
    if node is None:
        references = _bytecode_references(fn.__code__)
        return _Analysis("bytecode", fn.__qualname__, _function_fingerprint(fn), references)
    # The compiler already did scope analysis: a name that is global or free somewhere in fn's code
    # is in co_names / co_freevars, a local is not -- so a local `clean = ...` never pulls in a global
    # helper `clean`. Defaults and annotations are evaluated in the enclosing scope, so add their names.
    code = fn.__code__
    allowed = _code_names(code) | set(code.co_freevars) | _signature_names(node)
    return _Analysis("function", fn.__qualname__, _dump(node), _references(node, allowed))


def _analyze_class(cls: type) -> _Analysis:
    """Normalized source of the whole class body; method bytecode if no source."""
    node = _class_node(cls)
    if node is None:
        return _Analysis("class-bytecode", cls.__qualname__, _class_fingerprint(cls), ())
    # No scope filter: method locals that shadow a module name only make the version more sensitive.
    return _Analysis("class", cls.__qualname__, _dump(node), _references(node, None))


def _describe(obj: object) -> str:
    """A stable name for an object without Python source (``len``, a C extension callable)."""
    module = getattr(obj, "__module__", None) or type(obj).__module__
    name = getattr(obj, "__qualname__", None) or getattr(obj, "__name__", None) or type(obj).__qualname__
    return f"{module}.{name}"


# --------------------------------------------------------------------------- source normalization


def _function_node(fn: types.FunctionType) -> ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda | None:
    """Parsed, normalized definition of ``fn`` with its decorators stripped, or None."""
    statements = _parsed_source(fn)
    if not statements:
        return None
    if fn.__code__.co_name == "<lambda>":
        # getsource returns whole lines; with several lambdas on them we cannot tell which is fn.
        lambdas = [n for s in statements for n in ast.walk(s) if isinstance(n, ast.Lambda)]
        return _normalize(lambdas[0]) if len(lambdas) == 1 else None
    definition = statements[0]
    if not isinstance(definition, (ast.FunctionDef, ast.AsyncFunctionDef)):
        return None
    # `@asset(retries=3)` is scheduling policy, not logic.
    definition.decorator_list = []
    return _normalize(definition)


def _class_node(cls: type) -> ast.ClassDef | None:
    """Parsed, normalized class definition. Class decorators are kept: ``@dataclass(order=True)``
    changes behaviour."""
    statements = _parsed_source(cls)
    if not statements or not isinstance(statements[0], ast.ClassDef):
        return None
    return _normalize(statements[0])


def _parsed_source(obj: object) -> list[ast.stmt] | None:
    """The statements of ``obj``'s source, or None when there is no (parsable) source."""
    try:
        source = inspect.getsource(obj)  # type: ignore[arg-type]
    except Exception:  # OSError/TypeError normally; tokenizer or IndexError on odd or stale files
        return None
    try:
        return ast.parse(textwrap.dedent(source)).body
    except (SyntaxError, ValueError, RecursionError):
        pass
    try:
        # dedent gives up when a multi-line string sits at column 0 inside an indented def; nesting
        # the source in a block makes its indentation legal as it is.
        block = ast.parse("if True:\n" + source).body[0]
        return block.body if isinstance(block, ast.If) else None
    except (SyntaxError, ValueError, RecursionError):
        return None


_NodeT = Any


def _normalize(node: _NodeT) -> _NodeT:
    """Drop docstrings (and any other bare string statement: they have no effect) everywhere under
    ``node``, and forget the ``u""`` prefix. Mutates and returns ``node``."""
    for current in ast.walk(node):
        for field in ("body", "orelse", "finalbody"):
            block = getattr(current, field, None)
            if isinstance(block, list):
                setattr(current, field, [stmt for stmt in block if not _is_bare_string(stmt)])
        if isinstance(current, ast.Constant):
            current.kind = None
    return node


def _is_bare_string(statement: object) -> bool:
    """True for a statement that is just a string literal (a docstring)."""
    return (
        isinstance(statement, ast.Expr)
        and isinstance(statement.value, ast.Constant)
        and isinstance(statement.value.value, str)
    )


def _dump(node: ast.AST) -> str:
    """Position-free, field-annotated dump: equal for equal logic, whatever the layout."""
    return ast.dump(node, annotate_fields=True, include_attributes=False)


def _references(node: ast.AST, allowed: set[str] | None) -> tuple[_Chain, ...]:
    """The load chains under ``node`` whose head is in ``allowed`` (all when None), sorted."""
    return tuple(sorted(c for c in _load_chains(node) if allowed is None or c[0] in allowed))


def _signature_names(node: ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda) -> set[str]:
    """Head names used in ``node``'s defaults and annotations (a config model class, a constant)."""
    arguments = node.args
    parts: list[ast.AST | None] = [*arguments.defaults, *arguments.kw_defaults]
    parts.append(getattr(node, "returns", None))  # lambdas have no return annotation
    every_argument = (*arguments.posonlyargs, *arguments.args, *arguments.kwonlyargs)
    for argument in (*every_argument, arguments.vararg, arguments.kwarg):
        if argument is not None:
            parts.append(argument.annotation)
    return {chain[0] for part in parts if part is not None for chain in _load_chains(part)}


def _load_chains(node: ast.AST) -> set[_Chain]:
    """Names read under ``node``, as the longest attribute chain rooted at each (``mod.sub.fn``)."""
    found: set[_Chain] = set()
    stack = [node]
    while stack:
        current = stack.pop()
        chain = _load_chain(current)
        if chain is not None:
            found.add(chain)
        else:
            stack.extend(ast.iter_child_nodes(current))
    return found


def _load_chain(node: ast.AST) -> _Chain | None:
    """``a.b.c`` -> ("a", "b", "c"); a loaded name -> ("a",); anything else -> None."""
    attributes: list[str] = []
    while isinstance(node, ast.Attribute):
        attributes.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name) and (attributes or isinstance(node.ctx, ast.Load)):
        return (node.id, *reversed(attributes))
    return None


def _code_names(code: types.CodeType) -> set[str]:
    """Global and attribute names used anywhere in ``code``, nested functions included."""
    names = set(code.co_names)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names |= _code_names(const)
    return names


# --------------------------------------------------------------------------- literals and bytecode


def _literal_repr(value: object, *, bytecode: bool = False) -> str | None:
    """Canonical repr of a simple literal (scalars, tuples and frozensets of them), else None.

    Exact types only: a subclass may carry a repr with an address in it. Frozenset items are
    sorted, since their iteration order depends on the hash seed.
    """
    kind = type(value)
    if kind in (_BYTECODE_SCALAR_TYPES if bytecode else _SCALAR_TYPES):
        return repr(value)
    if kind is not tuple and kind is not frozenset:
        return None
    items = [_literal_repr(item, bytecode=bytecode) for item in value]  # type: ignore[attr-defined]
    if any(item is None for item in items):
        return None
    if kind is tuple:
        return "(" + "".join(f"{item}, " for item in items) + ")"
    return "frozenset({" + ", ".join(sorted(items)) + "})"  # type: ignore[arg-type]


def _function_fingerprint(fn: types.FunctionType) -> str:
    """Bytecode stand-in for source: code fingerprint plus default values."""
    defaults = [_constant_repr(v) for v in fn.__defaults__ or ()]
    kwdefaults = [f"{k}={_constant_repr(v)}" for k, v in sorted((fn.__kwdefaults__ or {}).items())]
    return "\n".join([_code_fingerprint(fn.__code__), f"defaults={defaults!r}", f"kw={kwdefaults!r}"])


def _code_fingerprint(code: types.CodeType) -> str:
    """The instruction stream of ``code`` with each constant operand spelled out, plus ``co_names``
    and the argument names. Nested code objects are fingerprinted recursively.

    Constants are inlined rather than hashed as ``co_consts``: the docstring sits in ``co_consts``
    but no instruction loads it, and adding one shifts every constant index -- inlining makes both
    invisible. No line numbers or file names either: moving code does not change it.
    """
    instructions = []
    for instruction in dis.get_instructions(code):
        if instruction.opcode in dis.hasconst and isinstance(instruction.arg, int):
            operand = _constant_repr(code.co_consts[instruction.arg])
        else:
            operand = repr(instruction.arg)
        instructions.append(f"{instruction.opname} {operand}")
    argument_count = code.co_argcount + code.co_kwonlyargcount
    argument_count += bool(code.co_flags & inspect.CO_VARARGS)
    argument_count += bool(code.co_flags & inspect.CO_VARKEYWORDS)
    parts = [code.co_name, repr(code.co_names), repr(code.co_varnames[:argument_count]), *instructions]
    return "(" + "; ".join(parts) + ")"


def _constant_repr(value: object) -> str:
    """Canonical spelling of a bytecode constant or default value; never an address."""
    if isinstance(value, types.CodeType):
        return _code_fingerprint(value)
    literal = _literal_repr(value, bytecode=True)
    return literal if literal is not None else f"<{type(value).__qualname__}>"


def _class_fingerprint(cls: type) -> str:
    """Bytecode stand-in for a class without source: its methods' fingerprints, by name."""
    parts = [cls.__qualname__]
    for name, member in sorted(vars(cls).items()):
        function = member.__func__ if isinstance(member, (staticmethod, classmethod)) else member
        if isinstance(function, types.FunctionType):
            parts.append(f"{name}:{_function_fingerprint(function)}")
    return "\n".join(parts)


def _bytecode_references(code: types.CodeType) -> tuple[_Chain, ...]:
    """Without source, every global or free name in the bytecode is a (single-name) reference."""
    return tuple(sorted((name,) for name in _code_names(code) | set(code.co_freevars)))


def _digest(parts: Iterable[str]) -> str:
    """xxh3-128 hex digest of length-prefixed parts (no separator ambiguity)."""
    hasher = xxhash.xxh3_128()
    for part in parts:
        data = part.encode("utf-8", "surrogatepass")
        hasher.update(len(data).to_bytes(8, "little"))
        hasher.update(data)
    return hasher.hexdigest()
