"""Check the product wheel's file list: `python devtools/wheel_contents.py dist/anime_production-*.whl`.

The wheel must hold every file of the product packages (modules, migrations, templates, static files)
and nothing else: no devtools/, no tests/, no stray top-level files. Its runtime dependencies must not
pull in what only the simulator needs, and must hold what the product imports. Exits 1 and lists the
offending files when any of this fails.
"""

import re
import sys
import tomllib
import zipfile
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
# Only the simulator (devtools) needs these; the dev extra installs them.
DEV_ONLY_REQUIREMENTS = frozenset({"aiohttp"})
# The product imports these beyond the web stack: Pillow makes the thumbnails of image outputs
# (jobs/thumbnails.py), so a server installed from the wheel alone must get it.
PRODUCT_REQUIREMENTS = frozenset({"pillow"})


def product_packages() -> list[str]:
    """The top-level packages the wheel ships, as pyproject.toml's package finder names them."""
    config = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
    patterns = config["tool"]["setuptools"]["packages"]["find"]["include"]
    return sorted({pattern.removesuffix("*").rstrip(".") for pattern in patterns})


def source_files(package: str) -> set[str]:
    """Every file of a product package in the work tree, as a wheel path."""
    root = REPO_ROOT / package
    return {
        path.relative_to(REPO_ROOT).as_posix()
        for path in root.rglob("*")
        if path.is_file() and "__pycache__" not in path.parts
    }


def runtime_requirements(wheel: zipfile.ZipFile) -> set[str]:
    """Normalised names of the wheel's Requires-Dist entries that no extra guards."""
    metadata_name = next(name for name in wheel.namelist() if name.endswith(".dist-info/METADATA"))
    names = set()
    for line in wheel.read(metadata_name).decode().splitlines():
        if line.startswith("Requires-Dist:") and "extra ==" not in line:
            match = re.match(r"[A-Za-z0-9._-]+", line.removeprefix("Requires-Dist:").strip())
            if match:
                names.add(re.sub(r"[-_.]+", "-", match.group()).lower())
    return names


def wheel_problems(wheel_path: Path) -> list[str]:
    packages = product_packages()
    with zipfile.ZipFile(wheel_path) as wheel:
        shipped = {name for name in wheel.namelist() if not name.endswith("/")}
        requirements = runtime_requirements(wheel)
    problems = []
    for name in sorted(shipped):
        top = name.split("/", 1)[0]
        if top not in packages and not top.endswith(".dist-info"):
            problems.append(f"not part of the product: {name}")
    expected = set().union(*(source_files(package) for package in packages))
    problems += [f"missing: {name}" for name in sorted(expected - shipped)]
    if not any("/templates/" in name for name in shipped):
        problems.append("no templates in the wheel")
    if not any("/static/" in name for name in shipped):
        problems.append("no static files in the wheel")
    dev_only = sorted(requirements & DEV_ONLY_REQUIREMENTS)
    problems += [f"runtime dependency only the dev tools need: {name}" for name in dev_only]
    missing = sorted(PRODUCT_REQUIREMENTS - requirements)
    problems += [f"not a runtime dependency, though the product imports it: {name}" for name in missing]
    return problems


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print(__doc__.splitlines()[0], file=sys.stderr)
        return 2
    problems = wheel_problems(Path(argv[0]))
    for problem in problems:
        print(problem, file=sys.stderr)
    if problems:
        print(f"{argv[0]}: {len(problems)} problem(s)", file=sys.stderr)
        return 1
    print(f"{argv[0]}: the product packages, their templates and static files, nothing else")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
