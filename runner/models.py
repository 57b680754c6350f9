"""The job-file format as frozen pydantic models: the single definition of what is valid."""

from __future__ import annotations

import difflib
import math
import re
import shlex
from collections.abc import Callable
from datetime import datetime
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    JsonValue,
    StringConstraints,
    WithJsonSchema,
    field_validator,
    model_validator,
)

from runner import cron
from runner.durations import parse_duration

JOB_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]*$"

# What `parse_duration` accepts, for editors: spaces are ignored inside, each unit appears
# once and largest first, and some digit is not zero.
_N = "[0-9][0-9 ]*"
DURATION_PATTERN = (
    rf"^\s*(?=[^\n]*[1-9])(?:{_N}|(?={_N}[dhms])"
    rf"(?:{_N}d *)?(?:{_N}h *)?(?:{_N}m *)?(?:{_N}s *)?)\s*$"
)
Duration = Annotated[
    int,
    BeforeValidator(parse_duration),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "integer", "exclusiveMinimum": 0},
                {"type": "string", "pattern": DURATION_PATTERN},
            ],
            "description": "Seconds, or 90s, 15m, 1h30m, 2d",
        }
    ),
]
"""Whole seconds; written as an integer or `90s`, `15m`, `1h30m`, `2d`."""

COMMAND_PROGRAM_PATTERN = r"^(?:/[^\x00]*|[^/\x00]+)$"
"""An absolute path, or a bare name looked up in `RUNNER_ALLOWED_COMMANDS` (never on PATH)."""
MAX_ARGV = 1000

TARGET_PATTERN = r"^[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*(?::[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*)?$"
JobId = Annotated[str, StringConstraints(pattern=JOB_ID_PATTERN, max_length=191)]
QueueName = Annotated[str, StringConstraints(pattern=JOB_ID_PATTERN, max_length=63)]
"""A procrastinate queue that `runner worker --queue` takes fires from."""
DEFAULT_QUEUE = "default"


def _in_range(moment: datetime) -> datetime:
    # Far ends overflow date arithmetic (offsets, jitter, grace) long after validation.
    if not 1970 <= moment.year <= 9000:
        raise ValueError(f"{moment.isoformat()} is out of range (years 1970 to 9000)")
    return moment


Timestamp = Annotated[datetime, Field(strict=False), AfterValidator(_in_range)]


def _check_timezone(name: str | None) -> str | None:
    if name is None:
        return None
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        close = _closest_zone(name)
        hint = f"did you mean {close!r}?" if close else "use an IANA name such as Europe/Berlin"
        raise ValueError(f"unknown time zone {name!r}; {hint}") from None
    return name


def _closest_zone(name: str) -> str | None:
    """Zone names are case-sensitive (`utc` is not found): suggest the spelling meant."""
    zones = available_timezones()
    by_case = {zone.lower(): zone for zone in zones}
    if name.lower() in by_case:
        return by_case[name.lower()]
    close = difflib.get_close_matches(name, sorted(zones), n=1, cutoff=0.8)
    return close[0] if close else None


TimeZoneName = Annotated[
    str,
    BeforeValidator(lambda v: _check_timezone(v) if isinstance(v, str) else v),
    WithJsonSchema({"type": "string", "description": "An IANA time zone, e.g. Europe/Berlin"}),
]


_CRON_FIELD = {"type": ["string", "integer"]}
_CRON_SCHEMA = {
    "anyOf": [
        {
            "type": "string",
            "description": "crontab(5): 5 or 6 fields, or @hourly, @daily, ...",
            "pattern": r"^\s*(@(hourly|daily|midnight|weekly|monthly|yearly|annually)"
            r"|\S+(\s+\S+){4,5})\s*$",
        },
        {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                name: _CRON_FIELD
                for name in ("second", "minute", "hour", "day", "month", "day_of_week")
            },
        },
        {"type": "null"},
    ]
}


def _cron_expression(value: object) -> object:
    """Accept a crontab string or a mapping of fields; store the normalised string."""
    if isinstance(value, dict):
        value = cron.mapping_to_expression(value)
    if isinstance(value, str):
        cron.parse(value)
    return value


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class Retries(_Model):
    """Attempts include the first; the wait before attempt n+1 is delay * backoff**(n-1)."""

    max_attempts: Annotated[int, Field(ge=1, le=100)] = 1
    delay: Duration = 10
    backoff: Annotated[float, Field(ge=1, le=100, strict=False)] = 2.0
    max_delay: Duration = 3600

    def wait_before(self, attempt: int) -> float:
        """Seconds to wait before `attempt` (2 = the first retry)."""
        return float(min(self.delay * self.backoff ** (attempt - 2), self.max_delay))


def _one_kind_schema() -> dict[str, Any]:
    """Exactly one of cron, interval, at set (not null); start and end only beside cron or
    interval: what `Trigger._one_kind` checks, in JSON Schema for editors."""
    kinds = ("cron", "interval", "at")
    null = {"type": "null"}

    def only(kind: str) -> dict[str, Any]:
        props: dict[str, Any] = {k: null for k in kinds if k != kind}
        props[kind] = {"not": null}
        if kind == "at":
            props.update(start=null, end=null)
        return {"required": [kind], "properties": props}

    return {"anyOf": [only(kind) for kind in kinds]}


class Trigger(_Model):
    """Exactly one of cron, interval or at; the rest refine it."""

    model_config = ConfigDict(
        extra="forbid", frozen=True, strict=True, json_schema_extra=_one_kind_schema()
    )

    cron: Annotated[str | None, BeforeValidator(_cron_expression), WithJsonSchema(_CRON_SCHEMA)] = (
        None
    )
    interval: Duration | None = None
    at: Timestamp | None = None
    start: Timestamp | None = None
    end: Timestamp | None = None
    jitter: Duration | None = None
    timezone: TimeZoneName | None = None

    @model_validator(mode="after")
    def _one_kind(self) -> Trigger:
        kinds = [k for k in ("cron", "interval", "at") if getattr(self, k) is not None]
        if len(kinds) != 1:
            found = " and ".join(kinds) if kinds else "none"
            raise ValueError(f"give exactly one of cron, interval or at (found {found})")
        if self.at is not None and (self.start or self.end):
            raise ValueError("start and end apply to cron and interval, not to at")
        if self.start and self.end and _aware(self.end) <= _aware(self.start):
            raise ValueError(
                f"end {self.end.isoformat()} is not after start {self.start.isoformat()}"
            )
        return self

    @property
    def kind(self) -> Literal["cron", "interval", "at"]:
        if self.cron is not None:
            return "cron"
        return "interval" if self.interval is not None else "at"


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=ZoneInfo("UTC"))


class JobFields(_Model):
    """Fields a job may set, and a file's `defaults` may supply."""

    target: Annotated[str | None, Field(json_schema_extra={"pattern": TARGET_PATTERN})] = None
    args: list[JsonValue] | None = None
    kwargs: dict[str, JsonValue] | None = None
    trigger: Trigger | None = None
    timezone: TimeZoneName | None = None
    misfire_grace_time: Duration | None = None
    coalesce: bool | None = None
    max_instances: Annotated[int, Field(ge=1, le=1000)] | None = None
    retries: Retries | None = None
    timeout: Duration | None = None
    paused: bool | None = None
    description: str | None = None
    labels: dict[str, str] | None = None
    queue: QueueName | None = None
    """Which workers take the job's fires under `serve --executor procrastinate`."""

    @field_validator("args", "kwargs")
    @classmethod
    def _json_only(cls, value: Any) -> Any:
        _reject_non_json(value)
        return value

    @field_validator("target")
    @classmethod
    def _target_shape(cls, value: str | None) -> str | None:
        if value is not None and not _TARGET.fullmatch(value):
            raise ValueError(f"{value!r} is not module:attribute (or module.attribute)")
        return value


def _check_command(argv: list[str] | None) -> list[str] | None:
    """The program is an absolute path or a bare name: a relative path (`./x`, `bin/x`)
    would depend on the working directory, which the job file's author may control."""
    if argv is None:
        return None
    if any("\x00" in item for item in argv):
        raise ValueError("a command may not hold a NUL character")
    if not re.fullmatch(COMMAND_PROGRAM_PATTERN[1:-1], argv[0]):
        raise ValueError(
            f"{argv[0]!r} is a relative path; give the program as an absolute path or "
            "as a bare name listed in RUNNER_ALLOWED_COMMANDS"
        )
    return argv


Command = Annotated[
    list[str],
    Field(min_length=1, max_length=MAX_ARGV),
    AfterValidator(_check_command),
    WithJsonSchema(
        {
            "type": "array",
            "items": {"type": "string", "pattern": r"^[^\x00]*$"},
            "prefixItems": [{"type": "string", "pattern": COMMAND_PROGRAM_PATTERN}],
            "minItems": 1,
            "maxItems": MAX_ARGV,
            "description": "argv of a program on RUNNER_ALLOWED_COMMANDS, run without a shell",
        }
    ),
]
"""argv: the program, then its arguments (`${VAR}` resolved in the arguments only)."""


def _not_both(*pairs: tuple[str, str]) -> dict[str, Any]:
    """JSON Schema: no two of these keys set (not null) in one mapping."""
    return {
        "allOf": [
            {
                "not": {
                    "required": [a, b],
                    "properties": {a: {"not": {"type": "null"}}, b: {"not": {"type": "null"}}},
                }
            }
            for a, b in pairs
        ]
    }


def _reject_non_json(value: Any) -> None:
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"{value} is not a JSON value")
    if isinstance(value, dict):
        for item in value.values():
            _reject_non_json(item)
    elif isinstance(value, list):
        for item in value:
            _reject_non_json(item)


_TARGET = re.compile(TARGET_PATTERN[1:-1])


class JobEntry(JobFields):
    """One item of `jobs:` as written. `command` is a job's own, never a file default: one
    program line shared by a file's jobs would make them the same job."""

    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        strict=True,
        json_schema_extra=_not_both(
            ("target", "command"), ("command", "args"), ("command", "kwargs")
        ),
    )

    id: JobId
    command: Command | None = None

    @model_validator(mode="after")
    def _target_or_command(self) -> JobEntry:
        if self.command is not None:
            if self.target is not None:
                raise ValueError("give either target or command, not both")
            if self.args is not None or self.kwargs is not None:
                raise ValueError("a command takes its arguments in command, not in args or kwargs")
        return self


class Job(_Model):
    """A job with its file's defaults and the documented defaults applied: what gets stored."""

    id: JobId
    target: str | None = None
    command: list[str] | None = None
    """argv of a program run in a child process; exactly one of target and command is set."""
    trigger: Trigger
    args: list[JsonValue] = []
    kwargs: dict[str, JsonValue] = {}
    timezone: str = "UTC"
    misfire_grace_time: int = 600
    coalesce: bool = True
    max_instances: int = 1
    retries: Retries = Retries()
    timeout: int | None = None
    paused: bool = False
    description: str | None = None
    labels: dict[str, str] = {}
    queue: str | None = None
    """Unset means `default`; left out of the stored spec then, so existing specs keep
    their hash."""

    @model_validator(mode="after")
    def _one_program(self) -> Job:
        if (self.target is None) == (self.command is None):
            raise ValueError("give either target or command, not both")
        if self.command is not None and (self.args or self.kwargs):
            raise ValueError("a command takes its arguments in command, not in args or kwargs")
        return self

    @property
    def zone(self) -> str:
        return self.trigger.timezone or self.timezone

    @property
    def program(self) -> str:
        """What the job runs, as `runner jobs` and the plan show it."""
        if self.command is not None:
            return shlex.join(self.command)
        return str(self.target)

    def canonical(self) -> dict[str, Any]:
        """A stable JSON form; equal specs give equal forms, so plans can compare them.
        A command job has no args or kwargs: they are left out, like every unset field."""
        unused = {"args", "kwargs"} if self.command is not None else None
        return self.model_dump(mode="json", exclude_none=True, exclude=unused)


def resolve(entry: JobEntry, defaults: JobFields | None) -> Job:
    """Apply the file's defaults field by field (shallow) and then the documented ones.

    Every value comes from a validated JobEntry or JobFields, whose field types are those of
    Job or narrower, so the Job is built without validating each value a second time (a
    third of reading a large job set); what only the combination can get wrong, Job's own
    model check, is checked here."""
    values: dict[str, Any] = {}
    for source in (defaults, entry):
        if source is not None:
            for name in source.model_fields_set:
                value = getattr(source, name)
                if value is not None:
                    values[name] = value
    if entry.command is not None:  # the defaults' target and its arguments are not this job's
        for name in ("target", "args", "kwargs"):
            if defaults is not None and name not in entry.model_fields_set:
                values.pop(name, None)
    if "target" not in values and "command" not in values:
        raise ValueError("target is required (or command)")
    if "trigger" not in values:
        raise ValueError("trigger is required")
    if "target" in values and "command" in values:
        raise ValueError("give either target or command, not both")
    if "command" in values and (values.get("args") or values.get("kwargs")):
        raise ValueError("a command takes its arguments in command, not in args or kwargs")
    return _built(values)


_JOB_TEMPLATE: dict[str, Any] = {
    name: None if info.is_required() else info.default for name, info in Job.model_fields.items()
}
"""Every field in order with its default; the required ones (id, trigger) are always given."""
_FRESH_DEFAULTS: dict[str, Callable[[], Any]] = {"args": list, "kwargs": dict, "labels": dict}
"""Mutable defaults: each job gets its own, as validation would give it."""
_set = object.__setattr__


def _built(values: dict[str, Any]) -> Job:
    """A Job of already-validated values and the defaults, as `Job.model_construct` makes one
    (which walks the aliases of every field and costs more than validating again)."""
    data = dict(_JOB_TEMPLATE)
    data.update(values)  # keeps the fields' order
    for name, fresh in _FRESH_DEFAULTS.items():
        if name not in values:
            data[name] = fresh()
    job = Job.__new__(Job)
    _set(job, "__dict__", data)
    _set(job, "__pydantic_fields_set__", set(values))
    _set(job, "__pydantic_extra__", None)
    _set(job, "__pydantic_private__", None)
    return job
