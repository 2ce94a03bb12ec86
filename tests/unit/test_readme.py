"""The README stays true: its tables render, its commands exist, its configuration keys are settings."""

from __future__ import annotations

import re
import types
import typing
from pathlib import Path

import click
from pydantic import BaseModel

from tiering.cli import cli
from tiering.config import Config

README = Path(__file__).resolve().parents[2] / "README.md"


def _lines() -> list[str]:
    return README.read_text(encoding="utf-8").splitlines()


def _outside_code(lines: list[str]) -> list[tuple[int, str]]:
    """(line number, line) for every line not inside a fenced code block."""
    kept, fenced = [], False
    for number, line in enumerate(lines, 1):
        if line.startswith("```"):
            fenced = not fenced
            continue
        if not fenced:
            kept.append((number, line))
    return kept


def _cells(row: str) -> list[str]:
    """The cells of a table row; ``\\|`` is a pipe inside a cell, not a border."""
    inner = row.strip()[1:-1] if row.strip().endswith("|") else row.strip()[1:]
    return [cell.strip() for cell in re.split(r"(?<!\\)\|", inner)]


def _tables(lines: list[tuple[int, str]]) -> list[list[tuple[int, str]]]:
    """Runs of consecutive lines starting with ``|``."""
    tables: list[list[tuple[int, str]]] = []
    previous = -1
    for number, line in lines:
        if line.startswith("|"):
            if number == previous + 1 and tables:
                tables[-1].append((number, line))
            else:
                tables.append([(number, line)])
            previous = number
    return tables


def _section(title: str) -> list[tuple[int, str]]:
    lines = _outside_code(_lines())
    start = next(i for i, (_, line) in enumerate(lines) if line == f"## {title}")
    end = next((i for i in range(start + 1, len(lines)) if lines[i][1].startswith("## ")), len(lines))
    return lines[start + 1:end]


def test_every_readme_table_is_one_block_whose_rows_have_the_header_column_count() -> None:
    lines = _outside_code(_lines())
    by_number = dict(lines)
    tables = _tables(lines)
    assert tables, "the README has tables"
    for table in tables:
        first, header = table[0]
        assert re.fullmatch(r"\|(\s*:?-+:?\s*\|)+", table[1][1]), f"line {table[1][0]}: no separator under a header"
        width = len(_cells(header))
        for number, row in table:
            assert len(_cells(row)) == width, f"README line {number}: {len(_cells(row))} cells, header has {width}"
        last = table[-1][0]
        # a blank line then another row would split the table in two when rendered
        assert not (by_number.get(last + 1) == "" and by_number.get(last + 2, "").startswith("|")), \
            f"README line {last + 1}: a blank line inside the table that starts at line {first}"


def _readme_commands() -> list[list[str]]:
    """The command words of every `tiering ...` in the first column of the CLI reference table."""
    found = []
    for table in _tables(_section("CLI reference")):
        for _, row in table[2:]:
            first = _cells(row)[0]
            for code in re.findall(r"`tiering ([^`]+)`", first):
                found.append([w for w in code.split() if re.fullmatch(r"[a-z][a-z-]*", w)])
    return found


def test_every_command_in_the_cli_table_exists_in_the_command_line() -> None:
    commands = _readme_commands()
    assert len(commands) >= 20
    for words in commands:
        command: click.Command = cli
        for depth, word in enumerate(words):
            if not isinstance(command, click.Group):
                break  # later words are arguments (`show member`, `restore cancel`)
            assert word in command.commands, f"`tiering {' '.join(words[:depth + 1])}` is not a command"
            command = command.commands[word]


def test_every_command_of_the_command_line_is_in_the_cli_table() -> None:
    named = {" ".join(words[:2]) if words[0] in ("policy", "access") else words[0] for words in _readme_commands()}
    for name, command in cli.commands.items():
        if isinstance(command, click.Group):
            for sub in command.commands:
                assert f"{name} {sub}" in named, f"`tiering {name} {sub}` is missing from the README's CLI table"
        else:
            assert name in named, f"`tiering {name}` is missing from the README's CLI table"


def _model_in(annotation: object) -> type[BaseModel] | None:
    """The pydantic model a field holds: itself, inside ``X | None``, or a ``dict``'s values."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is dict:
        return _model_in(args[1])
    if origin in (typing.Union, types.UnionType):
        for arg in args:
            model = _model_in(arg)
            if model is not None:
                return model
    return None


def _is_setting(key: str) -> bool:
    model: type[BaseModel] | None = Config
    parts = key.split(".")
    i = 0
    while i < len(parts):
        if model is None or parts[i] not in model.model_fields:
            return False
        annotation = model.model_fields[parts[i]].annotation
        if typing.get_origin(annotation) is dict:
            i += 1  # the next part is a name of the user's (a tier), not a setting
        model = _model_in(annotation)
        i += 1
    return True


def test_every_key_in_the_configuration_section_is_a_setting_of_the_config_model() -> None:
    keys = []
    for table in _tables(_section("Configuration")):
        if _cells(table[0][1])[0] != "key":
            continue
        keys += [m.group(1) for _, row in table[2:] if (m := re.fullmatch(r"`([a-z_.A-Z]+)`", _cells(row)[0]))]
    assert len(keys) >= 30
    for key in keys:
        assert _is_setting(key), f"README Configuration names `{key}`, which tiering.config has no field for"


def test_a_key_the_config_lacks_is_told_apart() -> None:
    assert _is_setting("transfer.workers") and _is_setting("tiers.NAME.credentials.profile")
    assert not _is_setting("schedule.window") and not _is_setting("tiers.NAME.cost")
