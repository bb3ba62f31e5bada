"""The package's layers (README "Layout"): each module imports only those below it, inside functions too."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "tvmharness"

# Top first. A package (engines, remote, ...) is one unit: its modules import one another freely.
LAYERS = [
    ["__main__"],
    ["cli"],
    ["doctor", "pipeline", "report"],
    ["recipe", "memory"],
    ["engines", "compress"],
    ["build"],
    ["tune"],
    ["remote", "frontend"],
    ["export"],
    ["models"],
    ["results", "data", "measure", "qdq", "targets", "provenance", "budgets", "_ms_build"],
    ["gpu", "native_log", "cache"],
    ["errors"],
]
RANK = {unit: rank for rank, units in enumerate(LAYERS) for unit in units}


def _unit(module: str) -> str:
    return module.split(".")[1] if "." in module else "__init__"


def _imports() -> list[tuple[str, str, int]]:
    """(importing module's file, imported unit, line) for every import of the package's own modules."""
    found = []
    for path in PACKAGE.rglob("*.py"):
        if "migrations" in path.parts:  # Alembic's revisions: loaded by Alembic, not imported
            continue
        parts = ["tvmharness", *path.relative_to(PACKAGE).with_suffix("").parts]
        package = parts[:-1]
        for node in ast.walk(ast.parse(path.read_text())):
            absolute = [alias.name for alias in node.names] if isinstance(node, ast.Import) else (
                [node.module] if isinstance(node, ast.ImportFrom) and not node.level and node.module else [])
            found += [(str(path.relative_to(PACKAGE)), _unit(name), node.lineno)
                      for name in absolute if name.startswith("tvmharness.")]
            if isinstance(node, ast.ImportFrom) and node.level:
                base = package[:len(package) - (node.level - 1)]
                folder = PACKAGE.parent.joinpath(*base)
                names = [node.module] if node.module else [  # `from . import x`: a module x, else a name of the package
                    alias.name for alias in node.names if (folder / f"{alias.name}.py").is_file() or (folder / alias.name).is_dir()] or [""]
                found += [(str(path.relative_to(PACKAGE)), _unit(".".join(base + name.split("."))) if name else _unit(".".join(base)),
                           node.lineno) for name in names]
    return found


def test_every_module_imports_only_modules_below_it():
    units = {_unit(".".join(["tvmharness", *p.relative_to(PACKAGE).with_suffix("").parts])) for p in PACKAGE.rglob("*.py")}
    assert units - {"__init__", "presets", "migrations"} <= set(RANK), "place the new module in LAYERS"
    upward = []
    for file, imported, line in _imports():
        mine = _unit("tvmharness." + file.removesuffix(".py").replace("/", "."))
        if mine == "__init__" or imported in ("__init__", mine):
            continue  # the package's own __init__ (its version) and a package's modules among themselves
        if RANK[imported] <= RANK[mine]:
            upward.append(f"{file}:{line} imports {imported}")
    assert upward == []
