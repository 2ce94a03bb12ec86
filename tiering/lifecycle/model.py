"""Policy files: the typed model, its validation, and the one-line errors a user reads.

A policy is a YAML file (see ``policies/default.yaml`` for a commented example)::

    heat_half_life_days: 7                  # days for a read to weigh half as much in `heat`
    tiers:                                  # per-tier knobs; a tier left out has none
      hot:  {high_watermark: 0.85, low_watermark: 0.70, min_residency_days: 3}
      warm: {min_residency_days: 30}
    rules:                                  # evaluated in file order; the first matching rule wins
      - name: demote-idle
        move: {from: hot, to: warm}
        when: {idle_days: ">= 14", reads_30d: "< 3"}
        unless: {tags: {retention: keep-online}}     # or a list of such blocks: any one that holds vetoes
    budget: {max_bytes: 50TiB, max_datasets: 500, window: "02:00-06:00"}

Criteria (keys of ``when`` and ``unless``). Every criterion of a block must hold for the block to hold:

=================  ==========================================================================================
``age_days``       whole days since the dataset was registered, e.g. ``">= 90"``
``idle_days``      whole days since the last read (since registration when never read)
``reads_<N>d``     reads in the last N days, any N >= 1 (``reads_1d``, ``reads_7d``, ``reads_30d``...)
``heat``           exponentially decayed read count (half-life ``heat_half_life_days``), e.g. ``"< 0.5"``
``size``           dataset size with a unit, e.g. ``"> 10GiB"`` (units: B, KB, MB, GB, TB, KiB..PiB)
``kind``           ``dataset`` or ``model``
``owner``          an owner, or a list of owners (any of)
``name``           a glob on the dataset name (``imagenet-*``), or a list of globs (any of)
``tags``           ``{key: value}`` or ``{key: [v1, v2]}``; every key must be present with one of its values
=================  ==========================================================================================

Comparisons are strings: an operator (``>=``, ``>``, ``<=``, ``<``, ``==``, ``!=``) then a number (or a size
for ``size``). A bare number is refused: ``14`` could mean ``>= 14`` or ``== 14``, and a lifecycle rule
that means the other one moves the wrong data.

What the model checks (errors name the file, the rule and the field, and say what was expected and what was
found, one line each): unknown keys and criteria, operators, sizes, rule names (unique), ``from`` and ``to``
distinct, watermarks given together with ``0 < low < high <= 1``, the window written ``HH:MM-HH:MM``.
Every number is bounded (days at most ``MAX_DAYS``, sizes and counts at most 2**63-1, never inf or NaN), so
whatever validates can be planned. What it cannot check, because a policy does not know the configured tiers:
that tier names exist. :func:`tiering.lifecycle.criteria.check_policy_against_tiers` does that, before every plan
and in ``tiering policy check`` whenever a config is found.
"""

from __future__ import annotations

import difflib
import operator
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import time
from os import PathLike
from pathlib import Path
from typing import Annotated, Any, Literal, NoReturn

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainValidator,
    PrivateAttr,
    ValidationError,
    field_validator,
    model_validator,
)

from tiering.config import MAX_SIZE, parse_size
from tiering.config_yaml import YamlRefused, compose_yaml, construct_yaml, read_yaml_text
from tiering.errors import PolicyError

Operator = Literal[">=", ">", "<=", "<", "==", "!="]
_OPERATOR_FUNCTIONS: dict[str, Callable[[float, float], bool]] = {
    ">=": operator.ge, ">": operator.gt, "<=": operator.le,
    "<": operator.lt, "==": operator.eq, "!=": operator.ne,
}
_COMPARISON_RE = re.compile(r"^\s*(>=|<=|==|!=|>|<)\s*(\S(?:.*\S)?)\s*$")
_READS_KEY_RE = re.compile(r"^reads_([1-9][0-9]{0,4})d$")
#: where ``reads_<N>d`` criteria are gathered inside :class:`Criteria` (also shown in error messages)
READS_FIELD = "reads_<N>d"
_TIER_NAME_RE = re.compile(r"^[a-z][a-z0-9_-]{0,31}$")
_RULE_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_WINDOW_RE = re.compile(r"^\s*([01][0-9]|2[0-3]):([0-5][0-9])\s*-\s*([01][0-9]|2[0-3]):([0-5][0-9])\s*$")

CRITERIA_NAMES = ("age_days", "idle_days", "reads_<N>d", "heat", "size", "kind", "owner", "name", "tags")

#: the largest number of days any field or criterion takes (100 years): dates a day count is added to
#: stay within the calendar
MAX_DAYS = 36_500
#: the largest magnitude of any other number (reads, heat, counts)
MAX_NUMBER = 2**63 - 1


@dataclass(frozen=True, slots=True)
class Comparison:
    """``<op> <threshold>``, e.g. ``>= 14``. ``threshold`` is in the criterion's unit (days, reads, bytes)."""

    op: Operator
    threshold: float
    #: the threshold as the file wrote it (``"10GiB"``), for messages
    written: str

    def holds(self, value: float) -> bool:
        """True when ``value <op> threshold``."""
        return _OPERATOR_FUNCTIONS[self.op](value, self.threshold)

    @property
    def function(self) -> Callable[[float, float], bool]:
        """The operator as a function of (value, threshold): ``holds(v)`` is ``function(v, threshold)``."""
        return _OPERATOR_FUNCTIONS[self.op]

    def __str__(self) -> str:
        return f"{self.op} {self.written}"


def _split_comparison(value: object, example: str) -> tuple[Operator, str]:
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise ValueError(f"expected a comparison like {example!r}, got {value!r}")
    if not isinstance(value, str):
        raise ValueError(
            f"expected an operator before the number, like {example!r}; got the bare number {value!r} "
            "(write '>= N' or '== N': a bare number is ambiguous)"
        )
    match = _COMPARISON_RE.match(value)
    if match is None:
        raise ValueError(
            f"expected an operator (>=, >, <=, <, ==, !=) and a value, like {example!r}; got {value!r}"
        )
    op: Operator = match.group(1)  # type: ignore[assignment]  # the regex only admits Operator values
    return op, match.group(2)


def parse_number_comparison(value: object, *, limit: float = MAX_NUMBER, unit: str = "") -> Comparison:
    """``">= 14"`` -> ``Comparison(">=", 14.0)``; the number is finite and at most ``limit`` in magnitude.

    Raises ``ValueError`` saying what was expected.
    """
    if isinstance(value, Comparison):
        return value
    op, written = _split_comparison(value, ">= 14")
    try:
        threshold = float(written)
    except ValueError:
        raise ValueError(f"expected a number after {op!r}, like '{op} 14'; got {value!r}") from None
    if threshold != threshold or threshold in (float("inf"), float("-inf")):
        raise ValueError(f"expected a finite number after {op!r}; got {value!r}")
    if abs(threshold) > limit:
        raise ValueError(f"expected a number of at most {limit:g}{unit} in magnitude after {op!r}; got {value!r}")
    return Comparison(op, threshold, written)


def parse_days_comparison(value: object) -> Comparison:
    """:func:`parse_number_comparison` for a count of days: at most :data:`MAX_DAYS` in magnitude."""
    return parse_number_comparison(value, limit=MAX_DAYS, unit=" days")


def parse_size_comparison(value: object) -> Comparison:
    """``"> 10GiB"`` -> ``Comparison(">", 10737418240.0)`` (bytes). Raises ``ValueError``."""
    if isinstance(value, Comparison):
        return value
    op, written = _split_comparison(value, "> 10GiB")
    try:
        threshold = parse_size(written)
    except ValueError:
        raise ValueError(
            f"expected a size after {op!r}, like '{op} 10GiB' or '{op} 500MB'; got {value!r}"
        ) from None
    return Comparison(op, float(threshold), written)


@dataclass(frozen=True, slots=True)
class TimeWindow:
    """A daily window ``start-end`` (wall-clock times); it wraps midnight when ``end < start``."""

    start: time
    end: time

    def contains(self, moment: time) -> bool:
        """True when ``moment`` (same clock as the window) is in ``[start, end)``."""
        if self.start < self.end:
            return self.start <= moment < self.end
        return moment >= self.start or moment < self.end

    def __str__(self) -> str:
        return f"{self.start:%H:%M}-{self.end:%H:%M}"


def parse_time_window(value: object) -> TimeWindow:
    """``"02:00-06:00"`` -> :class:`TimeWindow`. Raises ``ValueError``."""
    if isinstance(value, TimeWindow):
        return value
    match = _WINDOW_RE.match(value) if isinstance(value, str) else None
    if match is None:
        raise ValueError(f"expected a daily window 'HH:MM-HH:MM' like '02:00-06:00', got {value!r}")
    h1, m1, h2, m2 = (int(g) for g in match.groups())
    if (h1, m1) == (h2, m2):
        raise ValueError(f"expected a window whose start and end differ, got {value!r}")
    return TimeWindow(time(h1, m1), time(h2, m2))


def _names(value: object) -> object:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
        return value
    raise ValueError(f"expected a name or a non-empty list of names, got {value!r}")


def _tag_values(value: object) -> tuple[str, ...]:
    def one(v: object) -> str:
        if isinstance(v, bool):
            return str(v).lower()
        if isinstance(v, str | int | float):
            return str(v)
        raise ValueError(f"expected a tag value or a list of tag values, got {value!r}")

    if isinstance(value, list):
        if not value:
            raise ValueError("expected a tag value or a non-empty list of tag values, got []")
        return tuple(one(v) for v in value)
    return (one(value),)


def _tags(value: object) -> object:
    if not isinstance(value, dict) or not value:
        raise ValueError(
            f"expected a mapping of tag key to value(s), like {{retention: keep-online}}, got {value!r}"
        )
    return {str(k): _tag_values(v) for k, v in value.items()}


# The validators wrap the optional type so that a bad value yields one error, not one per union branch.
OptionalNumberComparison = Annotated[Comparison | None, PlainValidator(parse_number_comparison)]
OptionalDaysComparison = Annotated[Comparison | None, PlainValidator(parse_days_comparison)]
OptionalSizeComparison = Annotated[Comparison | None, PlainValidator(parse_size_comparison)]
OptionalWindow = Annotated[TimeWindow | None, PlainValidator(parse_time_window)]
OptionalNames = Annotated[list[str] | None, BeforeValidator(_names)]
OptionalTags = Annotated[dict[str, tuple[str, ...]] | None, BeforeValidator(_tags)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Criteria(_Strict):
    """One block of criteria; it holds when every criterion given holds. Built from ``when``/``unless``."""

    age_days: OptionalDaysComparison = None
    idle_days: OptionalDaysComparison = None
    heat: OptionalNumberComparison = None
    size: OptionalSizeComparison = None
    kind: Literal["dataset", "model"] | None = None
    owner: OptionalNames = None
    name: OptionalNames = None
    tags: OptionalTags = None
    #: ``reads_<N>d`` criteria: window length in days -> comparison
    reads: dict[int, Annotated[Comparison, PlainValidator(parse_number_comparison)]] = Field(
        default_factory=dict, alias="reads_<N>d"  # == READS_FIELD; mypy wants the literal
    )

    @model_validator(mode="before")
    @classmethod
    def _gather_read_windows(cls, data: Any) -> Any:
        if isinstance(data, Criteria):
            return data
        if not isinstance(data, dict) or not data:
            raise ValueError(f"expected a mapping of criteria like {{idle_days: '>= 30'}}, got {data!r}")
        if READS_FIELD in data:
            raise ValueError(f"{READS_FIELD!r} stands for a window: write reads_7d, reads_30d, ...")
        gathered: dict[str, Any] = {}
        windows: dict[int, Any] = {}
        for key, value in data.items():
            match = _READS_KEY_RE.match(key) if isinstance(key, str) else None
            if match:
                if int(match.group(1)) > MAX_DAYS:
                    raise ValueError(f"expected a reads window of at most {MAX_DAYS} days, got {key!r}")
                windows[int(match.group(1))] = value
            else:
                gathered[key] = value
        if windows:
            gathered[READS_FIELD] = windows
        return gathered


def _criteria_blocks(value: object) -> object:
    if value is None:
        return []
    if isinstance(value, dict):
        return [value]
    if isinstance(value, list) and value:
        return value
    raise ValueError(f"expected a mapping of criteria or a non-empty list of them, got {value!r}")


class MoveSpec(_Strict):
    """``move: {from: hot, to: warm}``: the rule only looks at datasets whose home tier is ``from``."""

    from_tier: str = Field(alias="from")
    to_tier: str = Field(alias="to")

    @field_validator("from_tier", "to_tier")
    @classmethod
    def _tier_name(cls, value: str) -> str:
        if not _TIER_NAME_RE.match(value):
            raise ValueError(f"expected a tier name (lower-case letters, digits, - or _), got {value!r}")
        return value


class Rule(_Strict):
    """A move rule: datasets on ``move.from`` for which ``when`` holds and no ``unless`` block holds."""

    name: str
    description: str = ""
    move: MoveSpec
    when: Criteria
    #: any block that holds vetoes the rule (a mapping in the file is one block)
    unless: Annotated[list[Criteria], BeforeValidator(_criteria_blocks)] = Field(default_factory=list)

    @field_validator("name")
    @classmethod
    def _rule_name(cls, value: str) -> str:
        if not _RULE_NAME_RE.match(value):
            raise ValueError(
                f"expected a rule name of letters, digits, '.', '_' or '-' (at most 64), got {value!r}"
            )
        return value


class TierPolicy(_Strict):
    """Per-tier knobs. Watermarks are fractions of the tier's configured capacity."""

    #: above this fraction of capacity, the coldest datasets are demoted ...
    high_watermark: float | None = Field(default=None, gt=0, le=1, allow_inf_nan=False)
    #: ... until usage is below this fraction
    low_watermark: float | None = Field(default=None, gt=0, lt=1, allow_inf_nan=False)
    #: days a dataset stays on this tier after arriving before any move out of it is planned
    min_residency_days: float = Field(default=0, ge=0, le=MAX_DAYS, allow_inf_nan=False)

    @property
    def has_watermarks(self) -> bool:
        return self.high_watermark is not None and self.low_watermark is not None


class Budget(_Strict):
    """Per-run caps on the whole plan, and the daily window in which moves should run."""

    max_bytes: int | None = Field(default=None, ge=0, le=MAX_SIZE, description="bytes; size strings like 50TiB")
    max_datasets: int | None = Field(default=None, ge=0, le=MAX_NUMBER)
    window: OptionalWindow = None

    @field_validator("max_bytes", mode="before")
    @classmethod
    def _size(cls, value: Any) -> Any:
        return None if value is None else parse_size(value)


class Policy(_Strict):
    """A validated policy file. Build it with :func:`parse_policy` or :func:`load_policy`."""

    description: str = ""
    #: days after which a read weighs half as much in ``heat``
    heat_half_life_days: float = Field(default=7.0, gt=0, le=MAX_DAYS, allow_inf_nan=False)
    tiers: dict[str, TierPolicy] = Field(default_factory=dict)
    rules: list[Rule] = Field(default_factory=list)
    budget: Budget = Field(default_factory=Budget)
    _source: str = PrivateAttr(default="<policy>")

    @property
    def source(self) -> str:
        """The file (or label) the policy was read from, for error messages."""
        return self._source

    def tier(self, name: str) -> TierPolicy:
        """The knobs of tier ``name`` (all defaults when the policy does not mention it)."""
        return self.tiers.get(name) or _NO_TIER_POLICY

    def read_windows(self) -> frozenset[int]:
        """Every N used as ``reads_<N>d``: the windows the fact gatherer must count."""
        windows: set[int] = set()
        for rule in self.rules:
            for block in (rule.when, *rule.unless):
                windows.update(block.reads)
        return frozenset(windows)


_NO_TIER_POLICY = TierPolicy()


# --- loading and errors ------------------------------------------------------------------------------------


def _first_duplicate_key(root: Any) -> tuple[str, int] | None:
    """The first key written twice in one mapping, and its line (PyYAML silently keeps the last one, and a
    policy must not lose a criterion that way)."""
    pending = [root]
    while pending:
        node = pending.pop()
        if isinstance(node, yaml.MappingNode):
            seen: set[str] = set()
            for key_node, value_node in node.value:
                if isinstance(key_node, yaml.ScalarNode):
                    if key_node.value in seen:
                        return str(key_node.value), int(key_node.start_mark.line) + 1
                    seen.add(key_node.value)
                pending.append(value_node)
        elif isinstance(node, yaml.SequenceNode):
            pending.extend(node.value)
    return None


_KEYS_BY_PLACE: dict[str, tuple[str, ...]] = {
    "top": ("description", "heat_half_life_days", "tiers", "rules", "budget"),
    "tier": ("high_watermark", "low_watermark", "min_residency_days"),
    "budget": ("max_bytes", "max_datasets", "window"),
    "rule": ("name", "description", "move", "when", "unless"),
    "move": ("from", "to"),
    "criteria": CRITERIA_NAMES,
}


@dataclass(frozen=True)
class _Problem:
    rule: str
    field: str
    message: str


def _rule_label(raw: Mapping[str, Any], index: int) -> str:
    rules = raw.get("rules")
    if isinstance(rules, list) and index < len(rules):
        entry = rules[index]
        if isinstance(entry, dict) and isinstance(entry.get("name"), str) and entry["name"]:
            return str(entry["name"])
    return f"#{index + 1}"


def _place_of(loc: tuple[int | str, ...]) -> str:
    """Which kind of mapping the last element of ``loc`` is a key of."""
    parent = loc[:-1]
    if not parent:
        return "top"
    if parent[0] == "tiers" and len(parent) == 2:
        return "tier"
    if parent == ("budget",):
        return "budget"
    if parent[0] == "rules" and len(parent) == 2:
        return "rule"
    if parent[0] == "rules" and len(parent) == 3 and parent[2] == "move":
        return "move"
    if parent[0] == "rules" and len(parent) >= 3 and parent[2] in ("when", "unless"):
        return "criteria"
    return ""


def _field_path(loc: tuple[int | str, ...], raw: Mapping[str, Any]) -> str:
    """``("rules", 0, "unless", 0, "reads_<N>d", 7)`` -> ``"unless.reads_7d"`` (as the file spells it)."""
    in_rule = len(loc) >= 2 and loc[0] == "rules" and isinstance(loc[1], int)
    items = loc[2:] if in_rule else loc
    unless_was_one_mapping = False
    if in_rule:
        rules = raw.get("rules")
        index = loc[1]
        assert isinstance(index, int)
        entry = rules[index] if isinstance(rules, list) and index < len(rules) else None
        unless_was_one_mapping = isinstance(entry, dict) and isinstance(entry.get("unless"), dict)
    parts: list[str] = []
    for position, item in enumerate(items):
        previous = items[position - 1] if position else None
        if isinstance(item, int):
            if previous == READS_FIELD:
                parts[-1] = f"reads_{item}d"
            elif previous == "unless" and unless_was_one_mapping:
                pass
            elif parts:
                parts[-1] = f"{parts[-1]}[{item}]"
            else:
                parts.append(f"[{item}]")
        else:
            parts.append(str(item))
    return ".".join(parts)


def _describe_found(value: Any) -> str:
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return repr(value)


def _problem_from_pydantic(error: Any, raw: Mapping[str, Any]) -> _Problem:
    loc: tuple[int | str, ...] = tuple(error["loc"])
    rule = _rule_label(raw, loc[1]) if len(loc) >= 2 and loc[0] == "rules" and isinstance(loc[1], int) else ""
    field = _field_path(loc, raw)
    kind = error["type"]
    found = error.get("input")
    if kind == "extra_forbidden":
        place = _place_of(loc)
        key = str(loc[-1])
        noun = "criterion" if place == "criteria" else "key"
        expected = _KEYS_BY_PLACE.get(place, ())
        close = difflib.get_close_matches(key, expected, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        hint += f"; expected one of: {', '.join(expected)}" if expected else ""
        return _Problem(rule, field, f"unknown {noun} {key!r}{hint}")
    if kind == "missing":
        return _Problem(rule, field, "required, but missing")
    message = str(error["msg"]).removeprefix("Value error, ")
    message = message.replace("Input should be", "expected", 1)
    if "got " not in message:
        message = f"{message}, got {_describe_found(found)}"
    return _Problem(rule, field, message)


def _semantic_problems(policy: Policy) -> list[_Problem]:
    problems: list[_Problem] = []
    for tier_name, tier in policy.tiers.items():
        where = f"tiers.{tier_name}"
        if not _TIER_NAME_RE.match(tier_name):
            problems.append(_Problem("", where, "expected a tier name (lower-case letters, digits, - or _), "
                                                f"got {tier_name!r}"))
        high, low = tier.high_watermark, tier.low_watermark
        if (high is None) != (low is None):
            missing = "low_watermark" if low is None else "high_watermark"
            problems.append(_Problem("", f"{where}.{missing}",
                                     "expected both high_watermark and low_watermark, got only one"))
        elif high is not None and low is not None and not low < high:
            problems.append(_Problem(
                "", f"{where}.low_watermark",
                f"expected 0 < low_watermark < high_watermark, got low {low} >= high {high}",
            ))
    seen: dict[str, int] = {}
    for index, rule in enumerate(policy.rules):
        if rule.name in seen:
            problems.append(_Problem(
                rule.name, "name",
                f"expected a unique rule name, got {rule.name!r} again (rules #{seen[rule.name] + 1} "
                f"and #{index + 1})",
            ))
        else:
            seen[rule.name] = index
        if rule.move.from_tier == rule.move.to_tier:
            problems.append(_Problem(
                rule.name, "move.to",
                f"expected a tier other than 'from', got {rule.move.to_tier!r} for both",
            ))
    return problems


def _raise_problems(source: str, problems: list[_Problem]) -> NoReturn:
    first, rest = problems[0], problems[1:]
    lines = [PolicyError(p.message, file=source, rule=p.rule, field=p.field).args[0] for p in rest]
    message = "\n".join([first.message, *lines])
    raise PolicyError(message, file=source, rule=first.rule, field=first.field)


def parse_policy(text_or_dict: str | Mapping[str, Any], *, source: str = "<policy>") -> Policy:
    """Validate a policy given as YAML text or as already-parsed data.

    ``source`` names the file in messages. Raises :class:`~tiering.errors.PolicyError` with one line per
    problem, each naming ``source``, the rule (by name, or ``#N`` when it has none) and the field; the
    exception's ``file``, ``rule`` and ``field`` attributes describe the first problem.
    """
    raw: Any
    if isinstance(text_or_dict, str):
        try:
            node = compose_yaml(text_or_dict)
            duplicate = None if node is None else _first_duplicate_key(node)
            raw = construct_yaml(node)
        except YamlRefused as exc:
            where = f"line {exc.line}: " if exc.line is not None else ""
            raise PolicyError(f"{where}refused: {exc.problem}", file=source) from None
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f"line {mark.line + 1}: " if mark is not None else ""
            problem = getattr(exc, "problem", None) or str(exc)
            raise PolicyError(f"{where}not valid YAML: {problem}", file=source) from None
        if duplicate is not None:
            key, line = duplicate
            raise PolicyError(f"line {line}: expected each key once in a mapping, got {key!r} twice",
                              file=source)
    else:
        raw = text_or_dict
    if raw is None:
        raw = {}
    if not isinstance(raw, Mapping):
        raise PolicyError(
            f"expected a mapping at the top level ({', '.join(_KEYS_BY_PLACE['top'])}), "
            f"got {_describe_found(raw)}",
            file=source,
        )
    raw = dict(raw)
    try:
        policy = Policy.model_validate(raw)
    except ValidationError as exc:
        errors = exc.errors()
        # A misspelt required key is one mistake, not two: the "unknown key" line suggests the right
        # spelling, so the "missing" line for that key is left out.
        suggested = {
            (tuple(e["loc"][:-1]), name)
            for e in errors if e["type"] == "extra_forbidden"
            for name in difflib.get_close_matches(str(e["loc"][-1]), _KEYS_BY_PLACE.get(_place_of(e["loc"]), ()),
                                                  n=1)
        }
        problems: list[_Problem] = []
        for error in errors:
            loc = tuple(error["loc"])
            if error["type"] == "missing" and (loc[:-1], loc[-1]) in suggested:
                continue
            problem = _problem_from_pydantic(error, raw)
            if problem not in problems:
                problems.append(problem)
        _raise_problems(source, problems)
    problems = _semantic_problems(policy)
    if problems:
        _raise_problems(source, problems)
    policy._source = source
    return policy


def load_policy(path: str | PathLike[str]) -> Policy:
    """Read and validate a policy file. Raises :class:`~tiering.errors.PolicyError` naming the file."""
    file = Path(path)
    try:
        text = read_yaml_text(file)
    except YamlRefused as exc:
        raise PolicyError(f"refused: {exc.problem}", file=str(file)) from None
    except FileNotFoundError:
        raise PolicyError("no such policy file", file=str(file)) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise PolicyError(f"cannot read: {exc}", file=str(file)) from None
    return parse_policy(text, source=str(file))
