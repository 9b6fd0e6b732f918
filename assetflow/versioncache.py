"""A persistent cache of code versions, so a CLI process does not re-parse a thousand asset functions
that have not changed since the last command.

A cache entry is valid for one exact state of the project: the key folds in the path, size and
modification time of every project file the process imported (not of every file under the project
folder, which may hold gigabytes of data), the literal module-level constants of the imported project
modules (an environment-driven ``THRESHOLD`` changes a version without changing a file), the Python
minor version (``ast.dump`` differs between them) and assetflow's own version. Anything else
recomputes. The cache lives in the user's cache folder, never in the project, and a cache that cannot
be read or written is simply not used.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import tempfile
import types
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

from .codeversion import project_modules


def project_fingerprint(root: Path, also: Iterable[str | os.PathLike[str]] = ()) -> str:
    """A cheap fingerprint of the project's code as this process imported it: the path, size and
    modification time of every loaded module file under ``root`` (see
    :func:`~assetflow.codeversion.project_modules`), and of ``also`` (the file that built the
    definitions, in case it was executed without becoming a module).

    Only imported files count because only they can change a code version; walking the project folder
    instead would list every data file, notebook and checkout under it on every command. A new file
    matters once an imported one imports it, and that edit changes the importer. Long-lived workers
    compare the fingerprint to notice that the code they imported has been edited since."""
    return _fingerprint(project_modules(root), also)


def _fingerprint(modules: list[tuple[str, types.ModuleType]], also: Iterable[str | os.PathLike[str]]) -> str:
    files = {os.path.abspath(str(module.__file__)) for _name, module in modules}
    files.update(os.path.abspath(str(path)) for path in also)
    digest = hashlib.sha256()
    for file in sorted(files):
        try:
            stat = os.stat(file)
            digest.update(f"{file}:{stat.st_size}:{stat.st_mtime_ns};".encode())
        except OSError:
            digest.update(f"{file}:missing;".encode())
    return digest.hexdigest()[:16]


_FORMAT = "assetflow.versioncache/1"
_LITERALS = (int, float, str, bytes, bool, type(None))


def _cache_file(root: Path) -> Path:
    base = os.environ.get("ASSETFLOW_CACHE") or os.path.join(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache", "assetflow")
    return Path(base) / "code-versions" / (hashlib.sha256(str(root).encode()).hexdigest()[:16] + ".json")


def _constants_digest(modules: list[tuple[str, types.ModuleType]]) -> str:
    digest = hashlib.sha256()
    for name, module in modules:
        for key, value in sorted(vars(module).items()):
            if type(value) in _LITERALS and not (key.startswith("__") and key.endswith("__")):
                digest.update(f"{name}.{key}={value!r};".encode())
    return digest.hexdigest()


def state_key(root: Path, also: Iterable[str | os.PathLike[str]] = ()) -> str:
    """The key of the project's code as it is now (``also``: see :func:`project_fingerprint`)."""
    from . import __version__

    modules = project_modules(root)  # one pass over sys.modules serves both digests
    parts = [_FORMAT, __version__, f"{sys.version_info[0]}.{sys.version_info[1]}", _fingerprint(modules, also),
             _constants_digest(modules)]
    return hashlib.sha256("|".join(parts).encode()).hexdigest()


def cached_versions(root: Path, names: list[str], compute: Callable[[list[str]], Mapping[str, str]],
                    also: Iterable[str | os.PathLike[str]] = ()) -> dict[str, str]:
    """Versions of ``names``: from the cache when the project is unchanged, else computed and stored
    (``also``: see :func:`project_fingerprint`)."""
    path = _cache_file(root)
    key = state_key(root, also)
    try:
        stored = json.loads(path.read_text())
        if stored.get("key") == key:
            known = stored.get("versions", {})
            if all(n in known for n in names):
                return {n: known[n] for n in names}
    except (OSError, ValueError, AttributeError):
        pass
    versions = dict(compute(names))
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile("w", dir=path.parent, delete=False, suffix=".tmp") as handle:
            json.dump({"key": key, "versions": versions}, handle)
        os.replace(handle.name, path)
    except OSError:
        pass
    return versions
