"""Lessons read the library through public means and share their parts (issue 11):
no monkeypatching and no underscore attributes of other objects, models built only through
explain/tiny_models.py, and a build() that composes one `_section_...()` function per section."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from llm_internals.explain import lessons

MODEL_CLASSES = ("DecoderLM", "Seq2SeqLM", "ModelConfig")
LESSON_FILES = sorted(Path(lessons.__file__).parent.glob("[!_]*.py"))


def _tree(path: Path) -> ast.Module:
    return ast.parse(path.read_text(), filename=str(path))


@pytest.mark.parametrize("path", LESSON_FILES, ids=lambda p: p.stem)
def test_no_private_attributes_and_no_patching(path):
    problems = []
    for node in ast.walk(_tree(path)):
        private = isinstance(node, ast.Attribute) and node.attr.startswith("_")
        if private and not (node.attr.startswith("__") and node.attr.endswith("__")):
            problems.append(f"line {node.lineno}: reads .{node.attr}")
        if isinstance(node, ast.Assign):
            for target in node.targets:
                # a lambda put on an object, or a part of an object's part replaced
                # (llm.runner.prepare = ...); a documented switch such as norm.fused = True is
                # configuration, and a class sets its own fields through self
                patched = isinstance(node.value, ast.Lambda) or isinstance(
                    getattr(target, "value", None), ast.Attribute
                )
                if isinstance(target, ast.Attribute) and patched:
                    problems.append(f"line {node.lineno}: replaces .{target.attr}")
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "setattr":
            problems.append(f"line {node.lineno}: setattr")
    assert not problems, f"{path.name}: {problems}"


@pytest.mark.parametrize("path", LESSON_FILES, ids=lambda p: p.stem)
def test_models_come_from_the_shared_tiny_models(path):
    built = [
        f"line {node.lineno}: {node.func.id}(...)"
        for node in ast.walk(_tree(path))
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) in MODEL_CLASSES
    ]
    assert not built, f"{path.name} builds its own model; use explain/tiny_models.py: {built}"


@pytest.mark.parametrize("path", LESSON_FILES, ids=lambda p: p.stem)
def test_build_composes_one_function_per_section(path):
    tree = _tree(path)
    build = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "build")
    sections = next(
        node.value
        for node in ast.walk(build)
        if (isinstance(node, ast.keyword) and node.arg == "sections")
        or (isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") == "sections")
    )
    assert isinstance(sections, ast.List), f"{path.name}: sections is not a list literal"
    names = [getattr(getattr(item, "func", None), "id", None) for item in sections.elts]
    assert names and all(n and n.startswith("_section_") for n in names), (path.name, names)
    defined = {n.name for n in tree.body if isinstance(n, ast.FunctionDef)}
    assert set(names) <= defined and len(set(names)) == len(names)
