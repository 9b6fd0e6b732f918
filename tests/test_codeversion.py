"""Specification of code versions: an asset's version moves with its logic and with nothing else.

Every test builds a real, tiny project on disk (``pyproject.toml`` plus modules), imports it, and
compares the version of the same function across two versions of the source. Each version of a
project lives in its own directory and is imported under fresh module names, exactly like a user
editing a file between two runs.
"""

from __future__ import annotations

import importlib.util
import inspect
import itertools
import os
import re
import subprocess
import sys
import textwrap
import types
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from assetflow.codeversion import code_version, project_root_for

REPO_ROOT = Path(__file__).resolve().parents[1]
HEX32 = re.compile(r"[0-9a-f]{32}")
_project_numbers = itertools.count()
_MISSING = object()


class ProjectLoader:
    """Writes a project into a fresh directory and imports its modules under unique names.

    ``files`` maps paths relative to the project root to module sources. Modules are executed in
    the given order with ``assets.py`` last; while loading, each one is also reachable under its
    bare name (``helpers``), so ``import helpers`` / ``from helpers import clean`` inside the
    project pick up *this* version of it.
    """

    def __init__(self, base: Path) -> None:
        self.base = base
        self.registered: list[str] = []

    def load(self, files: dict[str, str], main: str = "assets.py") -> types.ModuleType:
        number = next(_project_numbers)
        workspace = self.base / f"version_{number}"
        project = workspace / "project"
        project.mkdir(parents=True)
        (project / "pyproject.toml").write_text('[project]\nname = "demo"\n')
        for relative, source in files.items():
            path = project / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(textwrap.dedent(source))
        order = [rel for rel in files if rel != main] + [main]
        hidden: dict[str, object] = {}
        try:
            for relative in order:
                module = self._import(project / relative, number, hidden)
        finally:
            for bare, previous in hidden.items():
                if previous is _MISSING:
                    sys.modules.pop(bare, None)
                else:
                    sys.modules[bare] = previous  # type: ignore[assignment]
        return module

    def _import(self, path: Path, number: int, hidden: dict[str, object]) -> types.ModuleType:
        bare = path.stem
        unique = f"codeversion_project_{number}_{bare}"
        spec = importlib.util.spec_from_file_location(unique, path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        # Registered under the unique name for good: inspect needs it to find a class's source.
        sys.modules[unique] = module
        self.registered.append(unique)
        hidden.setdefault(bare, sys.modules.get(bare, _MISSING))
        sys.modules[bare] = module
        spec.loader.exec_module(module)
        return module

    def close(self) -> None:
        for name in self.registered:
            sys.modules.pop(name, None)


@pytest.fixture
def loader(tmp_path: Path) -> Iterator[ProjectLoader]:
    project_loader = ProjectLoader(tmp_path)
    yield project_loader
    project_loader.close()


@pytest.fixture
def version(loader: ProjectLoader) -> Callable[..., str]:
    """``version(files, name="my_asset", **code_version_kwargs)``: load a project, version one function."""

    def compute(files: dict[str, str], name: str = "my_asset", **kwargs: object) -> str:
        return code_version(getattr(loader.load(files), name), **kwargs)  # type: ignore[arg-type]

    return compute


def one_module(source: str) -> dict[str, str]:
    return {"assets.py": source}


# --------------------------------------------------------------------------- layout is not logic


def test_version_is_a_32_hex_xxh3_128_digest(version):
    assert HEX32.fullmatch(version(one_module("def my_asset(x):\n    return x\n")))


def test_comment_only_edit_keeps_version(version):
    before = """
        def my_asset(rows):
            return [r * 2 for r in rows]
    """
    after = """
        # Doubles every row.
        def my_asset(rows):  # the input rows
            # multiply
            return [r * 2 for r in rows]  # done
    """
    assert version(one_module(before)) == version(one_module(after))


def test_docstring_edit_keeps_version(version):
    before = '''
        def my_asset(rows):
            """Double the rows."""
            def double(r):
                """Double one row."""
                return r * 2

            class Row:
                """A row."""
                value = 1

            return [double(r) for r in rows], Row
    '''
    after = '''
        def my_asset(rows):
            """Double every row of the input.

            Longer explanation that changed a lot.
            """
            def double(r):
                return r * 2

            class Row:
                """One input row, rewritten docs."""
                value = 1

            return [double(r) for r in rows], Row
    '''
    assert version(one_module(before)) == version(one_module(after))


def test_reformatting_keeps_version(version):
    before = """
        def my_asset(rows, limit=10):
            total = sum(r["value"] for r in rows if r["value"] > 0)
            return {"total": total, "limit": limit}
    """
    after = """


        def my_asset(
            rows,
            limit = 10,
        ):

            total = sum(
                r['value']
                for r in rows
                if (r['value'] > 0)
            )
            return {'total': total,
                    'limit': limit,}
    """
    assert version(one_module(before)) == version(one_module(after))


ASSET_TEMPLATE = """
def my_asset(x{annotation}, limit={default}):
    return {body}
"""


@pytest.mark.parametrize(
    "edit",
    [
        {"body": "x + 2"},
        {"body": "x - 1"},
        {"default": "11"},
        {"annotation": ": float"},
    ],
    ids=["constant-in-body", "operator", "default-value", "parameter-annotation"],
)
def test_logic_edit_changes_version(version, edit):
    original = {"annotation": ": int", "default": "10", "body": "x + 1"}
    edited = {**original, **edit}
    assert version(one_module(ASSET_TEMPLATE.format(**original))) != version(
        one_module(ASSET_TEMPLATE.format(**edited))
    )


def test_decorator_argument_edit_keeps_version(version):
    decorator = textwrap.dedent('''
        def asset(**options):
            """Stand-in for the real decorator: returns the function unchanged."""
            def decorate(fn):
                return fn
            return decorate
    ''')
    before = decorator + "\n@asset(retries=3)\ndef my_asset(x):\n    return x + 1\n"
    after = decorator + '\n@asset(retries=5, group="nightly")\ndef my_asset(x):\n    return x + 1\n'
    assert version(one_module(before)) == version(one_module(after))


# --------------------------------------------------------------------------- helpers are logic


def test_editing_a_helper_in_the_same_module_changes_version(version):
    def files(helper_body):
        return one_module(f"""
            def clean(value):
                return {helper_body}

            def my_asset(rows):
                return [clean(r) for r in rows]
        """)

    assert version(files("value.strip()")) != version(files("value.strip().lower()"))


@pytest.mark.parametrize(
    ("import_line", "call"),
    [
        ("import helpers", "helpers.clean"),
        ("import helpers as h", "h.clean"),
        ("from helpers import clean", "clean"),
        ("from helpers import clean as scrub", "scrub"),
    ],
)
def test_editing_a_helper_in_another_project_module_changes_version(version, import_line, call):
    def files(helper_body):
        return {
            "helpers.py": f"def clean(value):\n    return {helper_body}\n",
            "assets.py": f"{import_line}\n\ndef my_asset(rows):\n    return [{call}(r) for r in rows]\n",
        }

    assert version(files("value.strip()")) != version(files("value.strip().lower()"))


def test_editing_a_helper_in_a_project_subdirectory_changes_version(version):
    def files(helper_body):
        return {
            "src/lib/tools.py": f"def clean(value):\n    return {helper_body}\n",
            "assets.py": "import tools\n\ndef my_asset(x):\n    return tools.clean(x)\n",
        }

    assert version(files("x")) != version(files("x + 1"))


def test_editing_a_transitive_helper_changes_version(version):
    def files(deepest_body):
        return {
            "text_utils.py": f"def squash(value):\n    return {deepest_body}\n",
            "helpers.py": """
                from text_utils import squash

                def clean(value):
                    return squash(value).strip()
            """,
            "assets.py": """
                import helpers

                def prepare(rows):
                    return [helpers.clean(r) for r in rows]

                def my_asset(rows):
                    return prepare(rows)
            """,
        }

    assert version(files("value.replace('  ', ' ')")) != version(files("value.replace('\\t', ' ')"))


def test_editing_a_helper_class_changes_version_but_its_docstring_does_not(version):
    def files(method_body, docstring):
        return {
            "helpers.py": f'''
                class Cleaner:
                    """{docstring}"""

                    def run(self, value):
                        """{docstring}"""
                        return {method_body}
            ''',
            "assets.py": "from helpers import Cleaner\n\ndef my_asset(x):\n    return Cleaner().run(x)\n",
        }

    baseline = version(files("value.strip()", "Cleans."))
    assert version(files("value.strip()", "Cleans values, carefully.")) == baseline
    assert version(files("value.lower()", "Cleans.")) != baseline


def test_editing_a_config_class_used_only_in_an_annotation_changes_version(version):
    def files(default):
        return {
            "config.py": f"class Settings:\n    limit: int = {default}\n",
            "assets.py": """
                from config import Settings

                def my_asset(x, settings: Settings):
                    return x
            """,
        }

    assert version(files("10")) != version(files("20"))


@pytest.mark.timeout(10)
def test_mutually_recursive_helpers_terminate(version):
    def files(odd_base_case):
        return one_module(f"""
            def is_even(n):
                return True if n == 0 else is_odd(n - 1)

            def is_odd(n):
                return {odd_base_case} if n == 0 else is_even(n - 1)

            def my_asset(n):
                return is_even(n) and my_asset(n - 1)
        """)

    first = version(files("False"))
    assert HEX32.fullmatch(first)
    # The cycle is really traversed: is_odd is only reachable through is_even.
    assert version(files("None")) != first


def test_functions_built_by_a_factory_differ_by_their_closure_constants(loader):
    module = loader.load(one_module("""
        def make_asset(factor):
            def scaled(x):
                return x * factor
            return scaled

        double = make_asset(2)
        triple = make_asset(3)
        another_double = make_asset(2)
    """))
    assert code_version(module.double) != code_version(module.triple)
    assert code_version(module.double) == code_version(module.another_double)


# --------------------------------------------------------------------------- constants


@pytest.mark.parametrize(
    ("before", "after"),
    [
        ("THRESHOLD = 0.5", "THRESHOLD = 0.6"),
        ("THRESHOLD = 'high'", "THRESHOLD = 'low'"),
        ("THRESHOLD = (1, ('a', None))", "THRESHOLD = (1, ('a', True))"),
        ("THRESHOLD = frozenset({'a', 'b'})", "THRESHOLD = frozenset({'a', 'c'})"),
    ],
)
def test_constant_edit_changes_version(version, before, after):
    asset = "\n\ndef my_asset(x):\n    return x > THRESHOLD\n"
    assert version(one_module(before + asset)) != version(one_module(after + asset))


def test_constant_read_through_a_project_module_changes_version(version):
    def files(value):
        return {
            "settings.py": f"THRESHOLD = {value}\n",
            "assets.py": "import settings\n\ndef my_asset(x):\n    return x > settings.THRESHOLD\n",
        }

    assert version(files("0.5")) != version(files("0.6"))


def test_non_literal_globals_are_ignored(version):
    def files(mapping):
        return one_module(f"LOOKUP = {mapping}\n\ndef my_asset(key):\n    return LOOKUP[key]\n")

    assert version(files("{'a': 1}")) == version(files("{'a': 2}"))


# --------------------------------------------------------------------------- what is not the user's code


def test_library_functions_are_not_hashed(loader, monkeypatch):
    module = loader.load(one_module("""
        import json
        import textwrap
        import pytest

        def my_asset(rows):
            return json.dumps(rows), textwrap.dedent("x"), pytest.approx(1.0)
    """))
    read: list[object] = []
    real_getsource = inspect.getsource

    def spying_getsource(obj):
        read.append(obj)
        return real_getsource(obj)

    monkeypatch.setattr(inspect, "getsource", spying_getsource)
    code_version(module.my_asset)
    assert read == [module.my_asset]


@pytest.mark.parametrize(
    "install_dir",
    ["site-packages", "dist-packages", ".venv", "venv", "env", ".venv/lib/python3.11/site-packages"],
)
def test_packages_installed_inside_the_project_are_not_hashed(version, install_dir):
    def files(library_body):
        return {
            f"{install_dir}/fakelib.py": f"def transform(x):\n    return {library_body}\n",
            "assets.py": "import fakelib\n\ndef my_asset(x):\n    return fakelib.transform(x)\n",
        }

    assert version(files("x + 1")) == version(files("x + 2"))


def test_project_root_bounds_what_is_hashed(version):
    def files(outside_body):
        return {
            "../outside/external.py": f"def transform(x):\n    return {outside_body}\n",
            "assets.py": "from external import transform\n\ndef my_asset(x):\n    return transform(x)\n",
        }

    assert version(files("x + 1")) == version(files("x + 2"))


def test_an_explicit_project_root_widens_what_is_hashed(loader):
    def version_with_workspace_root(outside_body):
        module = loader.load({
            "../outside/external.py": f"def transform(x):\n    return {outside_body}\n",
            "assets.py": "from external import transform\n\ndef my_asset(x):\n    return transform(x)\n",
        })
        workspace = Path(module.__file__).parent.parent
        return code_version(module.my_asset, project_root=workspace)

    assert version_with_workspace_root("x + 1") != version_with_workspace_root("x + 2")


def test_helper_not_called_does_not_matter(version):
    def files(unused_body):
        return one_module(f'''
            def unused(x):
                return {unused_body}

            def my_asset(x):
                """Unlike unused(x), this one is simple."""
                # unused(x) is mentioned only in comments
                return x * 2
        ''')

    assert version(files("x + 1")) == version(files("x + 2"))


def test_local_variable_named_like_a_helper_does_not_pull_it_in(version):
    def files(helper_body):
        return one_module(f"""
            def clean(x):
                return {helper_body}

            def my_asset(rows):
                clean = [r for r in rows if r]
                return clean
        """)

    assert version(files("x.strip()")) == version(files("x.lower()"))


def test_excluded_objects_are_skipped(version):
    def files(upstream_body):
        return one_module(f"""
            def asset(fn):
                fn.is_asset = True
                return fn

            @asset
            def upstream(x):
                return {upstream_body}

            @asset
            def my_asset(x):
                return upstream(x) * 2
        """)

    def skip_assets(obj):
        return getattr(obj, "is_asset", False)

    assert version(files("x + 1"), exclude=skip_assets) == version(files("x + 2"), exclude=skip_assets)
    # Without ``exclude`` the upstream would be hashed as an ordinary helper.
    assert version(files("x + 1")) != version(files("x + 2"))


# --------------------------------------------------------------------------- determinism


STABLE_PROJECT = {
    "helpers.py": """
        ALLOWED = frozenset({"alpha", "beta", "gamma", "delta", "epsilon"})

        class Cleaner:
            def run(self, value):
                return value if value in ALLOWED else None

        def clean(value):
            return Cleaner().run(value.strip())
    """,
    "assets.py": """
        import helpers
        from helpers import clean

        COLUMNS = ("a", "b", frozenset({"x", "y", "z"}))

        def my_asset(rows):
            return [clean(r) for r in rows], helpers.ALLOWED, COLUMNS
    """,
}


def test_version_is_stable_across_processes(loader):
    module = loader.load(STABLE_PROJECT)
    here = code_version(module.my_asset)
    project = Path(module.__file__).parent
    # In the child the module is plain ``assets``, not this process's unique name, and the hash
    # seed (so frozenset iteration order) differs from ours: neither may show in the version.
    script = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(project)!r})
        import assets
        from assetflow.codeversion import code_version
        print(code_version(assets.my_asset))
    """)
    pythonpath = os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "PYTHONHASHSEED": "12345", "PYTHONPATH": pythonpath, "PYTHONDONTWRITEBYTECODE": "1"}
    child = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=60, check=False
    )
    assert child.returncode == 0, child.stderr
    assert child.stdout.strip() == here


def test_version_does_not_depend_on_where_the_project_lives(version):
    # Every call of ``version`` writes the project into a new directory under new module names.
    assert version(STABLE_PROJECT) == version(STABLE_PROJECT)


def test_version_is_cached_per_function(loader, monkeypatch):
    module = loader.load(STABLE_PROJECT)
    first = code_version(module.my_asset)
    calls: list[object] = []
    monkeypatch.setattr(inspect, "getsource", lambda obj: calls.append(obj) or "")
    assert code_version(module.my_asset) == first
    assert calls == []


# --------------------------------------------------------------------------- no source


def exec_function(source: str, name: str = "my_asset") -> Callable[..., object]:
    namespace: dict[str, object] = {}
    exec(compile(textwrap.dedent(source), "<generated>", "exec"), namespace)
    return namespace[name]  # type: ignore[return-value]


def test_source_unavailable_falls_back():
    fn = exec_function("def my_asset(x):\n    return x + 1\n")
    with pytest.raises(OSError):
        inspect.getsource(fn)

    baseline = code_version(fn)
    assert HEX32.fullmatch(baseline)
    # Same bytecode, separately compiled, with a comment and a docstring: same version.
    same = exec_function('def my_asset(x):\n    """Adds one."""\n    # comment\n    return x + 1\n')
    assert code_version(same) == baseline
    assert code_version(exec_function("def my_asset(x):\n    return x + 2\n")) != baseline
    assert code_version(exec_function("def my_asset(x, y=1):\n    return x + 1\n")) != baseline


def test_source_unavailable_still_sees_nested_code_and_defaults():
    def nested(constant):
        return exec_function(f"def my_asset(rows):\n    return sorted(rows, key=lambda r: r * {constant})\n")

    def defaulted(default):
        return exec_function(f"def my_asset(x, limit={default}):\n    return x\n")

    assert code_version(nested(2)) == code_version(nested(2))
    assert code_version(nested(2)) != code_version(nested(3))
    assert code_version(defaulted(1)) != code_version(defaulted(2))


def test_builtins_and_lambdas_never_raise():
    assert HEX32.fullmatch(code_version(len))
    assert code_version(len) != code_version(print)
    assert code_version(exec_function("f = lambda x: x + 1", "f")) != code_version(
        exec_function("f = lambda x: x + 2", "f")
    )


# --------------------------------------------------------------------------- project roots


def test_project_root_for_finds_the_nearest_marked_ancestor(tmp_path):
    outer = tmp_path / "outer"
    inner = outer / "packages" / "inner"
    (inner / "pkg").mkdir(parents=True)
    (outer / "pyproject.toml").write_text("")
    module = inner / "pkg" / "mod.py"
    module.write_text("")
    assert project_root_for(module) == outer.resolve()

    (inner / "setup.cfg").write_text("")
    assert project_root_for(inner / "pkg" / "other.py") == inner.resolve()

    repo = tmp_path / "repo"
    (repo / ".git").mkdir(parents=True)
    (repo / "a.py").write_text("")
    assert project_root_for(repo / "a.py") == repo.resolve()


def test_project_root_for_falls_back_to_the_files_directory(tmp_path):
    lonely = tmp_path / "lonely" / "script.py"
    lonely.parent.mkdir()
    lonely.write_text("")
    markers = ("pyproject.toml", "setup.cfg", ".git")
    if any((directory / m).exists() for directory in lonely.resolve().parents for m in markers):
        pytest.skip("the temporary directory itself sits inside a marked project")
    assert project_root_for(lonely) == lonely.parent.resolve()


# --------------------------------------------------------------------------- property


NOISE = st.sampled_from(["", "    # a comment", "# flush-left comment", "        # deep comment", "   "])


@settings(max_examples=25, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(noise=st.lists(st.lists(NOISE, max_size=3), min_size=5, max_size=5))
def test_comments_and_blank_lines_anywhere_keep_version(tmp_path_factory, noise):
    lines = [
        "def my_asset(rows, limit=3):",
        "    kept = [r for r in rows if r]",
        "    if len(kept) > limit:",
        "        kept = kept[:limit]",
        "    return kept",
    ]
    noisy = [line for original, extra in zip(lines, noise) for line in (original, *extra)]
    project_loader = ProjectLoader(tmp_path_factory.mktemp("noise"))
    try:
        plain = code_version(project_loader.load(one_module("\n".join(lines) + "\n")).my_asset)
        with_noise = code_version(project_loader.load(one_module("\n".join(noisy) + "\n")).my_asset)
    finally:
        project_loader.close()
    assert plain == with_noise


def test_real_path_resolves_like_os_realpath_through_symlinked_folders_and_files(tmp_path: Path,
                                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    # real_path caches folders and builds strings by hand (it runs for every loaded module of every
    # command): it must still agree with os.path.realpath on every shape of module path.
    from assetflow.codeversion import real_path

    (tmp_path / "real" / "pkg").mkdir(parents=True)
    (tmp_path / "real" / "pkg" / "mod.py").write_text("")
    (tmp_path / "linked").symlink_to(tmp_path / "real")
    (tmp_path / "real" / "alias.py").symlink_to(tmp_path / "real" / "pkg" / "mod.py")
    (tmp_path / "chain").symlink_to("linked")  # relative, and to another link
    (tmp_path / "real" / "up").symlink_to("..")  # a link whose target climbs
    monkeypatch.chdir(tmp_path)
    paths = [
        str(tmp_path / "real" / "pkg" / "mod.py"),
        str(tmp_path / "linked" / "pkg" / "mod.py"),  # through a symlinked folder
        str(tmp_path / "real" / "alias.py"),  # a symlinked file
        f"{tmp_path}/linked//pkg/../pkg/mod.py",  # doubled separator and '..'
        "linked/pkg/mod.py",  # relative
        str(tmp_path / "chain" / "pkg" / "mod.py"),
        str(tmp_path / "real" / "up" / "real" / "up" / "linked" / "pkg" / "mod.py"),
        str(tmp_path / "real" / "missing" / ".." / "pkg" / "mod.py"),  # through a folder that does not exist
        "/mod.py",  # a file at the filesystem root (need not exist)
        f"{tmp_path}/real/pkg/",  # a folder with a trailing separator
    ]
    assert [real_path(p) for p in paths] == [os.path.realpath(p) for p in paths]


def test_project_modules_finds_project_files_however_they_were_imported(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    # project_modules decides most modules once per folder (a folder that resolves outside the project
    # and holds no link); a module reached through a link from outside must still count, and one
    # beside the project in a plain folder must not.
    from assetflow.codeversion import project_modules

    root = tmp_path / "project"
    (root / "pkg").mkdir(parents=True)
    for relative in ("top.py", "pkg/inner.py", "single.py"):
        (root / relative).write_text("")
    site = tmp_path / "site-packages"
    (site / "plain").mkdir(parents=True)
    (site / "plain" / "lib.py").write_text("")
    (site / "linkedpkg").symlink_to(root / "pkg")  # a symlinked package folder
    (site / "single.py").symlink_to(root / "single.py")  # a symlinked single-module install
    (site / "other.py").write_text("")  # a plain module beside the link
    files = {
        "t_top": root / "top.py",  # directly in the project folder
        "t_inner": root / "pkg" / "inner.py",
        "t_via_folder": site / "linkedpkg" / "inner.py",
        "t_via_file": site / "single.py",
        "t_plain": site / "plain" / "lib.py",
        "t_other": site / "other.py",
    }
    for name, file in files.items():
        module = types.ModuleType(name)
        module.__file__ = str(file)
        monkeypatch.setitem(sys.modules, name, module)
    found = {name for name, _module in project_modules(root) if name.startswith("t_")}
    assert found == {"t_top", "t_inner", "t_via_folder", "t_via_file"}
