"""The ``assetflow`` command: parse, call the API, render. No logic of its own.

Exit codes (the contract): 0 success; 1 a materialization or blocking check failed, or ``status
--check`` found an overdue/failed asset; 2 usage or definition error; 3 the store is held by another
``materialize``; 130 interrupted.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import os
import sys
import tomllib
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

from . import api, render
from .definitions import Definitions
from .errors import AssetflowError, UsageError
from .process_exit import leave


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(message)


def _global_options(parser: argparse.ArgumentParser, *, top: bool) -> None:
    # Global options are accepted before or after the command; below the top level their defaults are
    # SUPPRESS so that a value given before the command is not reset by the subcommand's default.
    default = None if top else argparse.SUPPRESS
    parser.add_argument("-m", "--module", default=default, help="module holding `defs`")
    parser.add_argument("-f", "--file", default=default, help="Python file holding `defs`")
    parser.add_argument("--store", default=default, help="lineage store path (default .assetflow/lineage.duckdb)")
    parser.add_argument("--data", default=default, help="data root: path or fsspec URL (default .assetflow/data)")
    parser.add_argument("--storage-option", action="append", default=[] if top else argparse.SUPPRESS,
                        metavar="KEY=VALUE", help="fsspec option for a remote store or data root (e.g. endpoint_url=...)")
    parser.add_argument("--json", action="store_true", default=False if top else argparse.SUPPRESS,
                        help="print one JSON document on stdout")


def _selection(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("select", nargs="*", metavar="SELECT", help="name, name+, +name, group:G, tag:K=V")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (exposed for documentation and tests)."""
    parser = _Parser(prog="assetflow", description="Asset-centric materialization: plan what is stale, build only that.")
    _global_options(parser, top=True)
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    def command(name: str, help_text: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help_text, description=help_text)
        _global_options(sub, top=False)
        return sub

    command("list", "assets, partitions, groups, upstreams")
    for name, text in (("plan", "what materialize would run, with reasons; changes nothing"),
                       ("materialize", "build the selected (asset, partition) pairs")):
        sub = command(name, text)
        _selection(sub)
        sub.add_argument("--stale", action="store_true", help="only what is stale")
        sub.add_argument("--partitions", action="append", metavar="RANGE",
                         help="a..b, a.., ..b, a,b,c, last:N; DIM=... for multi partitions")
        sub.add_argument("--config", metavar="FILE", help="TOML or JSON, a table per asset")
    mat = commands.choices["materialize"]
    mat.add_argument("--max-concurrency", type=int, metavar="N")
    mat.add_argument("--tag", action="append", default=[], metavar="K=V")
    mat.add_argument("--executor", choices=["threads", "processes", "dask"], default="threads")
    mat.add_argument("--dask-address", metavar="URL", help="Dask scheduler (default ASSETFLOW_DASK_ADDRESS or a LocalCluster)")
    mat.add_argument("--wait", action="store_true", help="wait for another materialize holding the store")
    sub = command("status", "per asset: up to date / stale / missing / failed, last materialization, freshness")
    _selection(sub)
    sub.add_argument("--check", action="store_true", help="exit 1 if any selected asset is overdue or failed")
    sub.add_argument("--config", metavar="FILE")
    sub = command("lineage", "versions consumed and produced, upstream and downstream")
    sub.add_argument("asset")
    sub.add_argument("--partition", metavar="KEY")
    sub = command("runs", "run history")
    sub.add_argument("--limit", type=int, default=20)
    sub.add_argument("--tag", action="append", default=[], metavar="K=V")
    sub = command("run", "one run's steps, errors and captured logs")
    sub.add_argument("run_id")
    command("unlock", "clear the run lock of a remote store left by a dead runner")
    sub = command("gc", "remove stored values no longer referenced")
    sub.add_argument("--keep", type=int, default=1, metavar="N", help="versions to keep per partition")
    sub.add_argument("--dry-run", action="store_true")
    return parser


def _pairs(items: Sequence[str], what: str) -> dict[str, str]:
    result = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UsageError(f"{what} {item!r}: expected KEY=VALUE")
        result[key] = value
    return result


def _storage_options(items: Sequence[str]) -> dict[str, Any]:
    options: dict[str, Any] = {}
    for key, text in _pairs(items, "--storage-option").items():
        try:
            options[key] = json.loads(text)  # numbers, booleans and JSON objects keep their type
        except ValueError:
            options[key] = text
    return options


def _configured_module() -> str | None:
    for folder in [Path.cwd(), *Path.cwd().parents]:
        pyproject = folder / "pyproject.toml"
        if pyproject.exists():
            try:
                data = tomllib.loads(pyproject.read_text())
            except (OSError, tomllib.TOMLDecodeError) as exc:
                raise UsageError(f"cannot read {pyproject}: {exc}") from None
            module = data.get("tool", {}).get("assetflow", {}).get("module")
            if module:
                sys.path.insert(0, str(folder))
                return module
            return None
    return None


def load_definitions(module: str | None, file: str | None) -> Definitions:
    """Import the user's definitions from ``-m``, ``-f`` or pyproject's ``[tool.assetflow] module``."""
    if module and file:
        raise UsageError("give -m MODULE or -f FILE, not both")
    try:
        if file:
            path = Path(file).resolve()
            if not path.is_file():
                raise UsageError(f"definitions file {file} does not exist")
            name = path.stem
            sys.path.insert(0, str(path.parent))
            spec = importlib.util.spec_from_file_location(name, path)
            loaded = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
            sys.modules[name] = loaded
            spec.loader.exec_module(loaded)  # type: ignore[union-attr]
        else:
            module = module or _configured_module()
            if not module:
                raise UsageError("no definitions: pass -m MODULE or -f FILE, or set [tool.assetflow] module in pyproject.toml")
            if str(Path.cwd()) not in sys.path:
                sys.path.insert(0, str(Path.cwd()))
            loaded = importlib.import_module(module)
    except AssetflowError:
        raise
    except Exception as exc:
        target = file or module
        raise UsageError(f"cannot load definitions from {target}: {type(exc).__name__}: {exc}") from None
    found = getattr(loaded, "defs", None)
    if not isinstance(found, Definitions):
        candidates = [v for v in vars(loaded).values() if isinstance(v, Definitions)]
        if len(candidates) != 1:
            raise UsageError(f"{file or module} defines no `defs = af.Definitions(...)`")
        found = candidates[0]
    return found


def _dispatch(args: argparse.Namespace) -> int:
    defs = load_definitions(args.module, args.file)
    where = {"store": args.store, "data": args.data, "storage_options": _storage_options(args.storage_option)}
    as_json = args.json
    if args.command == "list":
        return render.listing(api.open_project(defs, **where), as_json)
    if args.command == "plan":
        plan = api.plan(defs, args.select, args.stale, args.partitions, config=args.config, **where)
        return render.plan(plan, as_json)
    from . import reports  # the other commands return pydantic models; `plan` does without

    if args.command == "unlock":
        return render.unlocked(reports.unlock(defs, **where), as_json)
    if args.command == "materialize":
        options = {"address": args.dask_address} if args.executor == "dask" and args.dask_address else {}
        with render.Progress(enabled=not as_json and sys.stdout.isatty()) as progress:
            result = api.materialize(
                defs, args.select, args.stale, args.partitions, max_concurrency=args.max_concurrency,
                tags=_pairs(args.tag, "--tag"), config=args.config, executor=args.executor, wait=args.wait,
                progress=progress.update, executor_options=options, **where)
        return render.run_result(result, as_json)
    if args.command == "status":
        result = reports.status(defs, args.select, config=args.config, **where)
        code = render.status(result, as_json)
        return 1 if args.check and result.alerting else code
    if args.command == "lineage":
        return render.lineage(reports.lineage(defs, args.asset, args.partition, **where), as_json)
    if args.command == "runs":
        return render.runs(reports.runs(defs, args.limit, _pairs(args.tag, "--tag"), **where), as_json)
    if args.command == "run":
        return render.run_detail(reports.run(defs, args.run_id, **where), as_json)
    if args.command == "gc":
        return render.gc(reports.gc(defs, args.keep, args.dry_run, **where), as_json)
    raise UsageError(f"unknown command {args.command}")


def entry() -> NoReturn:
    """The ``assetflow`` console script (and ``python -m assetflow.cli``): :func:`main`, then end the
    process without finalizing the interpreter (see :mod:`assetflow.process_exit`)."""
    leave(main())


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command with ``argv`` (the process's arguments by default); returns its exit code."""
    try:
        args = build_parser().parse_args(argv)
        return _dispatch(args)
    except AssetflowError as exc:
        print(f"assetflow: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("assetflow: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0
    except Exception as exc:  # a bug: one line by default, the traceback on request
        if os.environ.get("ASSETFLOW_DEBUG"):
            raise
        print(f"assetflow: internal error: {type(exc).__name__}: {exc} (set ASSETFLOW_DEBUG=1 for the traceback)", file=sys.stderr)
        return 1


def _json_default(value: Any) -> Any:
    return str(value)


def dump(document: Any) -> None:
    """Print one JSON document on stdout."""
    sys.stdout.write(json.dumps(document, default=_json_default) + "\n")


if __name__ == "__main__":
    entry()
