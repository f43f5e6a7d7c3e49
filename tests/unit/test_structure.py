"""The package's shape, checked: imports go one way, and no module grows past one job's size."""

from __future__ import annotations

from tests.support.imports import SOURCE, Graph, describe

#: The largest module bgjobs accepts (docs/architecture.md): past it, a module holds two jobs.
MAX_LINES = 400


def test_no_import_cycle_among_the_package_s_modules() -> None:
    assert describe(Graph()) == []


def test_the_checker_finds_a_cycle_through_a_function_level_import(tmp_path) -> None:  # type: ignore[no-untyped-def]
    package = tmp_path / "bgjobs"
    (package / "fam").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "fam" / "__init__.py").write_text("from .sender import send\n")
    (package / "fam" / "sender.py").write_text("def send():\n    from .actors import job\n    job()\n")
    (package / "fam" / "actors.py").write_text("from bgjobs.fam import send\n\ndef job():\n    send()\n")
    (package / "fam" / "types.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
                                              "    from .actors import job\n")  # fmt: skip
    graph = Graph(package)
    assert graph.cycles() == [["bgjobs.fam.actors", "bgjobs.fam.sender"]]
    assert graph.edges["bgjobs.fam.types"] == set()  # type-only imports never run


def test_the_checker_follows_imports_of_modules_named_by_literal_strings(tmp_path) -> None:  # type: ignore[no-untyped-def]
    # The shape bgjobs had: db -> migrations (in a function) -> the model modules, named as strings
    # in a tuple another module imports -> db
    package = tmp_path / "bgjobs"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "db.py").write_text("def upgrade():\n    from .migrations import run\n    run()\n")
    (package / "schema.py").write_text('MODELS = ("bgjobs.models",)\n')
    (package / "migrations.py").write_text(
        "import importlib\nfrom .schema import MODELS\n\ndef run():\n"
        "    for module in MODELS:\n        importlib.import_module(module)\n"
        "    importlib.import_module('bgjobs.extra')\n"
    )
    (package / "models.py").write_text("from . import db\n")
    # A string that names a module without importing it is no edge
    (package / "extra.py").write_text("import logging\nlogging.getLogger('bgjobs.db')\n")
    graph = Graph(package)
    assert graph.edges["bgjobs.migrations"] == {"bgjobs.schema", "bgjobs.models", "bgjobs.extra"}
    assert graph.edges["bgjobs.extra"] == set()
    assert graph.cycles() == [["bgjobs.db", "bgjobs.migrations", "bgjobs.models"]]


def test_no_module_is_over_the_size_limit() -> None:
    sizes = {str(p.relative_to(SOURCE)): len(p.read_text().splitlines()) for p in SOURCE.rglob("*.py")}
    assert {name: n for name, n in sizes.items() if n >= MAX_LINES} == {}


def test_import_bgjobs_reads_no_package_metadata_until_the_version_is_asked_for() -> None:
    import importlib.metadata
    import subprocess
    import sys

    probe = ("import sys, bgjobs; before = 'importlib.metadata' in sys.modules; "
             "print(before, bgjobs.__version__)")  # fmt: skip
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert done.stdout.split() == ["False", importlib.metadata.version("bgjobs")]


def test_every_error_is_in_one_tree_and_every_public_one_is_defined_in_bgjobs_errors() -> None:
    import importlib
    import inspect
    import pkgutil

    import bgjobs
    from bgjobs.errors import BgjobsError

    found: dict[str, type] = {}
    for module in pkgutil.walk_packages(bgjobs.__path__, "bgjobs."):
        if module.name.startswith(("bgjobs.migrations.versions", "bgjobs.migrations.env")) or (
            module.name == "bgjobs.actors"
        ):
            continue  # Alembic's scripts; bgjobs.actors boots a worker (its errors are the others')
        for _, value in inspect.getmembers(importlib.import_module(module.name), inspect.isclass):
            if issubclass(value, BaseException) and value.__module__.startswith("bgjobs"):
                found[f"{value.__module__}.{value.__qualname__}"] = value
    outside = sorted(name for name, error in found.items() if not issubclass(error, BgjobsError))
    public = {name: error for name, error in found.items() if not error.__name__.startswith("_")}
    elsewhere = sorted(name for name, error in public.items() if error.__module__ != "bgjobs.errors")
    assert (outside, elsewhere) == ([], [])
    assert len(found) >= 20  # the walk did find them


def test_the_claim_primitive_is_the_only_one_that_takes_or_releases_a_unit_of_work() -> None:
    """How "one way to do a thing once" is checked: only ``claims.py`` writes the claim columns
    (``claimed_by``, ``lease_until``; migrations add them), and the coordination store's leases are
    taken only for what is not a unit of work (the scheduler's leadership, a batch job's one run at
    a time, the short mutexes built on them)."""
    import re

    writes = re.compile(r"\b(lease_until|claimed_by)\s*=[^=]")
    leases = re.compile(r"\.lease\(")
    writers, leasers = set(), set()
    for path in SOURCE.rglob("*.py"):
        name = str(path.relative_to(SOURCE))
        text = path.read_text()
        if writes.search(text) and not name.startswith("migrations/"):
            writers.add(name)
        if leases.search(text):
            leasers.add(name)
    assert writers == {"claims.py"}
    assert leasers == {"jobs.py", "scheduling.py", "coordination.py"}


def test_no_family_reaches_into_another_family_s_private_modules() -> None:
    """A family uses another through the names its package exports (``bgjobs.exports.encode``),
    never through its private modules, which their owner may change at will."""
    import ast

    families = {"cleanup", "exports", "notifications", "payouts", "webhooks"}
    reaching = []
    for path in SOURCE.rglob("*.py"):
        parts = path.relative_to(SOURCE).parts
        if len(parts) < 2 or parts[0] not in families:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level == 2 and node.module:
                target = node.module.split(".")
                if target[0] in families - {parts[0]} and any(p.startswith("_") for p in target[1:]):
                    reaching.append(f"{'/'.join(parts)} -> {node.module}")
    assert reaching == []
