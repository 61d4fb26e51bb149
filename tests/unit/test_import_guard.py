"""The layers of the package hold: the pure core loads no ray or redis, only ``table/`` imports redis and
only ``distributed/`` imports ray (docs/architecture.md, "Layers").

The packages are walked, not listed by hand: a new module under ``core/``, ``search/`` or ``train/`` is
checked the day it is added.
"""

import ast
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "germinator_dist"
PURE_PACKAGES = ("core", "search", "train")
PURE_MODULES = ("records", "errors", "config", "table_protocol", "endpoints", "redaction")


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _all_modules() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts)


def _imported_roots(path: Path) -> set[str]:
    """Top-level names of every module ``path`` imports, at any depth of its code (lazy imports too)."""
    roots = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            roots.add(node.module.split(".")[0])
    return roots


def _top_package(path: Path) -> str:
    rel = path.relative_to(PACKAGE).parts
    return rel[0] if len(rel) > 1 else ""


def test_pure_modules_load_no_ray_or_redis():
    modules = [f"germinator_dist.{m}" for m in PURE_MODULES]
    for pkg in PURE_PACKAGES:
        modules += [_module_name(p) for p in sorted((PACKAGE / pkg).rglob("*.py"))]
    assert len(modules) > 20, modules  # the walk found the packages
    code = (
        "import sys\n"
        f"for m in {modules!r}: __import__(m)\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('ray', 'redis'))\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=180)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "", f"the pure core loaded: {out.stdout.strip()}"


def test_only_the_table_package_imports_redis():
    bad = [str(p.relative_to(PACKAGE)) for p in _all_modules() if _top_package(p) != "table"
           and {"redis", "hiredis"} & _imported_roots(p)]  # fmt: skip
    assert bad == [], f"redis imported outside table/: {bad}"


def test_only_the_distributed_package_imports_ray():
    bad = [str(p.relative_to(PACKAGE)) for p in _all_modules() if _top_package(p) != "distributed"
           and "ray" in _imported_roots(p)]  # fmt: skip
    assert bad == [], f"ray imported outside distributed/: {bad}"


def _imports_from(paths, above: set[str]) -> list[str]:
    """``path: module`` for each import (lazy ones too) of ``germinator_dist.<one of above>...``."""
    bad = []
    for p in paths:
        for node in ast.walk(ast.parse(p.read_text(), str(p))):
            names = []
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            elif isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            for name in names:
                parts = name.split(".")
                if parts[0] == "germinator_dist" and len(parts) > 1 and parts[1] in above:
                    bad.append(f"{p.relative_to(PACKAGE)}: {name}")
    return bad


def test_the_pure_packages_import_nothing_above_them():
    """core/, search/ and train/ never import the table, the Ray side, the service or the CLI."""
    paths = [p for pkg in PURE_PACKAGES for p in sorted((PACKAGE / pkg).rglob("*.py"))]
    assert _imports_from(paths, {"table", "distributed", "service", "cli"}) == []


def test_the_records_layer_imports_no_package():
    """The top-level modules (errors, records, config, protocols, endpoints, redaction) sit under every
    package: none of them imports one, not even lazily (validating a spec builds nothing of the search)."""
    packages = {p.name for p in PACKAGE.iterdir() if (p / "__init__.py").exists()}
    assert {"core", "search", "table", "distributed"} <= packages
    paths = [PACKAGE / f"{m}.py" for m in PURE_MODULES]
    assert _imports_from(paths, packages) == []
