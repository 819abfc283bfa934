"""The floors of the package (see docs/architecture.md): a module imports only from its own floor
and below. Checked on every `llm_internals` import in src/, including imports inside functions."""

from __future__ import annotations

import ast
from pathlib import Path

import llm_internals

PACKAGE = Path(llm_internals.__file__).parent
FLOORS = {
    # floor 0: no model concepts; everything may use these
    "errors": 0, "console": 0, "trace": 0, "files": 0, "devices": 0, "__init__": 0,
    # floor 1: one formula per file, and corpora
    "data": 1, "layers": 1, "quant": 1, "kernels": 1,
    # floor 2: tokenizers, models, adapters
    "tokenizer": 2, "models": 2, "adapters": 2,
    # floor 3: training and inference
    "training": 3, "inference": 3, "parallel": 3,
    # floor 4: what runs models as a whole
    "evaluation": 4, "agents": 4, "rag": 4,
    # floor 5: explaining and showing
    "explain": 5, "web": 5,
    # floor 6: the command line and the tour
    "commands": 6, "tour": 6, "cli": 6, "__main__": 6,
}  # fmt: skip


def _imports(path: Path) -> list[tuple[int, str]]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module))
        elif isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
    return [(line, name) for line, name in found if name.startswith("llm_internals.")]


def test_every_top_level_module_has_a_floor():
    tops = {p.name.removesuffix(".py") for p in PACKAGE.iterdir() if p.suffix == ".py" or
            (p.is_dir() and (p / "__init__.py").exists())}  # fmt: skip
    assert tops <= set(FLOORS), f"add these to FLOORS: {sorted(tops - set(FLOORS))}"


def test_no_module_imports_from_a_higher_floor():
    upward = []
    for path in sorted(PACKAGE.rglob("*.py")):
        floor = FLOORS[path.relative_to(PACKAGE).parts[0].removesuffix(".py")]
        for line, name in _imports(path):
            target = FLOORS.get(name.split(".")[1], 99)
            if target > floor:
                upward.append(f"{path.relative_to(PACKAGE)}:{line} imports {name}")
    assert not upward, "upward imports:\n" + "\n".join(upward)


def test_library_never_imports_the_cli_or_the_tour():
    offenders = [
        f"{path.relative_to(PACKAGE)}:{line}"
        for path in PACKAGE.rglob("*.py")
        if path.relative_to(PACKAGE).parts[0] not in ("commands", "tour", "cli.py", "__main__.py")
        for line, name in _imports(path)
        if name.split(".")[1] in ("commands", "tour", "cli")
    ]
    assert not offenders
