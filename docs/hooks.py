"""MkDocs hook: the reference pages that are generated, never written by hand.

A page holds a marker, ``<!-- generated: configuration -->`` or ``<!-- generated: cli -->``, and
the build puts in its place what the code says today: every table and key of
``notifier.config.TABLES`` with its default, what it accepts (the key's ``Check``) and the comment
``notifier init`` writes above it; and the help of every ``notifier`` command from its argparse
parser. So neither page can disagree with the code it describes.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import re
from importlib import resources
from typing import Any

MARKER = re.compile(r"<!-- generated: (\w+) -->")


def toml_value(value: Any) -> str:
    """A default as the TOML file spells it."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, list | tuple):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    return str(value)


def key_comments() -> dict[str, str]:
    """The comment above each key in the file ``notifier init`` writes, by dotted key."""
    text = resources.files("notifier.config").joinpath("default.toml").read_text()
    comments: dict[str, str] = {}
    table, pending = "", []
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("[") and stripped.endswith("]"):
            table, pending = stripped[1:-1], []
        elif stripped.startswith("#"):
            pending.append(stripped.lstrip("#").strip())
        elif "=" in stripped and table:
            key = stripped.split("=", 1)[0].strip()
            comments[f"{table}.{key}"] = " ".join(pending)
            pending = []
        else:
            pending = []
    return comments


def cell(text: str) -> str:
    """Text for a table cell: no raw HTML (``<task_id>``), no column break."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace("|", "\\|")


def configuration() -> str:
    """One table per ``[table]``: key, default, what it accepts, and what it does."""
    from notifier.config import TABLES

    comments = key_comments()
    parts = []
    for name, table in TABLES.items():
        parts.append(f"### `[{name}]`\n")
        parts.append("| key | default | accepts | what it does |")
        parts.append("| --- | --- | --- | --- |")
        for f in dataclasses.fields(table):  # type: ignore[arg-type]
            default = "*(secret)*" if f.metadata["secret"] and f.default else toml_value(f.default)
            comment = cell(comments.get(f"{name}.{f.name}", ""))
            expected = cell(f.metadata["check"].expected)
            parts.append(f"| `{f.name}` | `{default}` | {expected} | {comment} |")
        parts.append("")
    return "\n".join(parts)


def cli() -> str:
    """``notifier --help``, then each command's ``--help``, as the parser prints them."""
    from notifier.cli import _parser

    os.environ["COLUMNS"] = "100"  # argparse wraps to the terminal; fix it for a stable page
    parser = _parser()
    parts = ["### `notifier`\n", "```text", parser.format_help().rstrip(), "```\n"]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                usage = sub.format_help().rstrip()
                parts += [f"### `notifier {name}`\n", "```text", usage, "```\n"]
    return "\n".join(parts)


GENERATORS = {"configuration": configuration, "cli": cli}


def on_page_markdown(markdown: str, **_: Any) -> str:
    return MARKER.sub(lambda m: GENERATORS[m.group(1)](), markdown)
