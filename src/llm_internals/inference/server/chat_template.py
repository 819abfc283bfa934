"""Turning a chat (a list of role/content messages) into the one prompt a decoder continues.

A chat model was fine-tuned on conversations written out in one exact format; its checkpoint
ships that format as a Jinja template (`chat_template.jinja`, or `chat_template` in
`tokenizer_config.json`), which we render the way HF transformers does. A base model (ours,
trained on plain text) has none, so the server falls back to a plain-text template that any
tokenizer can encode:

    System: You are terse.        (system and developer messages)
                                  (a blank line between messages)
    User: Hello!

    Assistant:                    (the generation prompt: the model writes the reply)

With the plain template the server also stops at "\\nUser:" and "\\nSystem:", so a base model
that goes on to invent the user's next turn is cut there.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llm_internals.errors import LLMInternalsError

ROLE_NAMES = {"system": "System", "developer": "System", "user": "User", "assistant": "Assistant"}


@dataclass(frozen=True)
class SimpleChatTemplate:
    """The plain-text fallback described in the module docstring."""

    stop: tuple[str, ...] = ("\nUser:", "\nSystem:")
    name: str = "simple"

    def render(self, messages: Sequence[dict[str, str]]) -> str:
        turns = [f"{ROLE_NAMES[m['role']]}: {m['content']}" for m in messages]
        return "\n\n".join([*turns, "Assistant:"])


@dataclass(frozen=True)
class JinjaChatTemplate:
    """A checkpoint's own Jinja chat template, rendered like transformers' apply_chat_template
    (sandboxed, trim_blocks, lstrip_blocks, add_generation_prompt=True)."""

    source: str
    special: tuple[tuple[str, str], ...] = ()  # bos_token / eos_token / ... from the config
    stop: tuple[str, ...] = ()
    name: str = "jinja"

    def render(self, messages: Sequence[dict[str, str]]) -> str:
        template = _compile(self.source)
        try:
            return template.render(messages=list(messages), add_generation_prompt=True,
                                   **dict(self.special))  # fmt: skip
        except Exception as err:  # a template's raise_exception() or a bad message shape
            raise LLMInternalsError(f"messages: the chat template rejected them: {err}") from None


def _compile(source: str) -> Any:
    import jinja2
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    def raise_exception(message: str) -> None:
        raise jinja2.TemplateError(message)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                        extensions=["jinja2.ext.loopcontrols"])  # fmt: skip
    env.filters["tojson"] = lambda value, indent=None: json.dumps(value, indent=indent)
    env.globals["raise_exception"] = raise_exception
    return env.from_string(source)


def load_chat_template(directory: str | Path | None) -> SimpleChatTemplate | JinjaChatTemplate:
    """The checkpoint's own template if DIRECTORY has one (`chat_template.jinja`, where
    transformers >= 4.43 saves it, or the `chat_template` field of `tokenizer_config.json`),
    otherwise the plain-text fallback."""
    if directory is None:
        return SimpleChatTemplate()
    directory = Path(directory)
    config_path = directory / "tokenizer_config.json"
    config: dict[str, Any] = {}
    if config_path.exists():
        try:
            config = json.loads(config_path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as err:
            raise LLMInternalsError(f"{config_path}: not readable JSON ({err})") from None
        if not isinstance(config, dict):
            raise LLMInternalsError(f"{config_path}: expected a JSON object")
    source, where = config.get("chat_template"), f"{config_path}: field chat_template"
    if isinstance(source, list):  # [{"name": "default", "template": ...}, ...]
        named = {t.get("name"): t.get("template") for t in source if isinstance(t, dict)}
        source = named.get("default")
    jinja_path = directory / "chat_template.jinja"
    if jinja_path.exists():
        source, where = jinja_path.read_text(encoding="utf-8"), str(jinja_path)
    if source is None:
        return SimpleChatTemplate()
    if not isinstance(source, str):
        raise LLMInternalsError(f"{where} must be a string")
    try:
        _compile(source)
    except Exception as err:
        raise LLMInternalsError(f"{where} is not a valid Jinja template: {err}") from None
    special = []
    for key in ("bos_token", "eos_token", "unk_token", "pad_token"):
        value = config.get(key)
        if isinstance(value, dict):  # the AddedToken form {"content": "<s>", ...}
            value = value.get("content")
        if isinstance(value, str):
            special.append((key, value))
    return JinjaChatTemplate(source, tuple(special))
