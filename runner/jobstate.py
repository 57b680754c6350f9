"""The APScheduler 3 job rows the runner writes.

A stored job never references user code: its callable is the runner's own entry point and
its arguments are the job id and the JSON spec. APScheduler's SQLAlchemyJobStore deletes
rows it cannot unpickle, so a user module that fails to import must never be able to make
a row unloadable.
"""

from __future__ import annotations

import io
import pickle
from datetime import datetime
from typing import Any

from runner.models import Job

ENTRY_POINT = "runner.execute:run_job"
STATE_VERSION = 1


def build_state(
    job: Job, spec: dict[str, Any], trigger: Any, next_run_time: datetime | None
) -> dict[str, Any]:
    return {
        "version": STATE_VERSION,
        "id": job.id,
        "func": ENTRY_POINT,
        "trigger": trigger,
        "executor": "default",
        "args": (job.id, spec),
        "kwargs": {},
        "name": job.id,
        "misfire_grace_time": job.misfire_grace_time,
        "coalesce": job.coalesce,
        "max_instances": job.max_instances,
        "next_run_time": next_run_time,
    }


def refresh_state(state: dict[str, Any], job: Job, spec: dict[str, Any]) -> dict[str, Any]:
    """A stored state with everything but its trigger and next run time replaced."""
    fresh = dict(state)
    fresh.update(
        args=(job.id, spec),
        misfire_grace_time=job.misfire_grace_time,
        coalesce=job.coalesce,
        max_instances=job.max_instances,
    )
    return fresh


def dumps(state: dict[str, Any]) -> bytes:
    return pickle.dumps(state, pickle.HIGHEST_PROTOCOL)


_FRAGMENT_LIMIT = 60_000
"""Below the pickler's 64 KiB frame size, a pickle has at most one frame, so its body is
its bytes past the header."""


def _body(data: bytes) -> bytes:
    """The opcodes of a whole pickle that push its object: no PROTO, FRAME or STOP."""
    start = 11 if data[2:3] == b"\x95" else 2  # FRAME and its 8-byte length, when framed
    return data[start:-1]


def _unmemoized(value: object) -> bytes:
    """The opcodes that push `value` without storing anything in the memo: in any place of
    any pickle they push the same value, whatever was memoized before them."""
    buffer = io.BytesIO()
    pickler = pickle.Pickler(buffer, pickle.HIGHEST_PROTOCOL)
    pickler.fast = True  # no memo: the state holds no cycle
    pickler.dump(value)
    return _body(buffer.getvalue())


def _text(value: str) -> bytes:
    """The pickle opcode of a str, as the pickler writes it (and never memoized)."""
    raw = value.encode("utf-8", "surrogatepass")
    if len(raw) <= 0xFF:
        return b"\x8c" + bytes((len(raw),)) + raw  # SHORT_BINUNICODE
    return b"X" + len(raw).to_bytes(4, "little") + raw  # BINUNICODE


class StateDumper:
    """`dumps(build_state(...))` for the jobs of one write, sharing the work their equal
    parts need.

    The jobs of one write share their built triggers and first fire times, and all states
    have the same keys; pickling all of it again for each job was most of the cost. A state
    is written as the opcodes of a dict whose keys and constants are made once, whose
    trigger, fire time and numbers are made once per distinct one without using the memo,
    and whose `args` are pickled per job (the only part that may use the memo, so its
    references stay its own). Loading it gives a state equal to `build_state`'s, trigger
    included, with any unpickler; only where `dumps` would store one object for two equal
    references (the id as `id` and `name`) are there two equal objects.
    """

    def __init__(self) -> None:
        self._by_identity: dict[int, tuple[object, bytes]] = {}
        self._by_value: dict[tuple[type, object], bytes] = {}

    def state(
        self, job: Job, spec: dict[str, Any], trigger: Any, next_run_time: datetime | None
    ) -> bytes:
        """The bytes of `build_state(job, spec, trigger, next_run_time)`."""
        args = _body(pickle.dumps((job.id, spec), pickle.HIGHEST_PROTOCOL))
        if len(args) > _FRAGMENT_LIMIT:
            return dumps(build_state(job, spec, trigger, next_run_time))
        ident = _text(job.id)
        part = self._part
        return b"".join(
            (
                _OPEN,
                ident,
                _FUNC_TO_TRIGGER,
                part(trigger),
                _EXECUTOR_TO_ARGS,
                args,
                _KWARGS_TO_NAME,
                ident,
                _MISFIRE,
                part(job.misfire_grace_time),
                _COALESCE,
                part(job.coalesce),
                _MAX_INSTANCES,
                part(job.max_instances),
                _NEXT_RUN_TIME,
                part(next_run_time),
                _CLOSE,
            )
        )

    def _part(self, value: object) -> bytes:
        kind = type(value)
        if kind is int or kind is bool or kind is float or value is None:
            found = self._by_value.get((kind, value))
            if found is None:
                found = self._by_value[(kind, value)] = _unmemoized(value)
            return found
        shared = self._by_identity.get(id(value))
        if shared is None or shared[0] is not value:
            shared = (value, _unmemoized(value))  # holding `value` keeps its id its own
            self._by_identity[id(value)] = shared
        return shared[1]


STATE_KEYS = (
    "version",
    "id",
    "func",
    "trigger",
    "executor",
    "args",
    "kwargs",
    "name",
    "misfire_grace_time",
    "coalesce",
    "max_instances",
    "next_run_time",
)
"""The keys of `build_state`, in its order, as StateDumper writes them."""

_OPEN = (
    b"\x80\x05}("  # PROTO 5, EMPTY_DICT, MARK
    + _text("version")
    + _unmemoized(STATE_VERSION)
    + _text("id")
)
_FUNC_TO_TRIGGER = _text("func") + _text(ENTRY_POINT) + _text("trigger")
_EXECUTOR_TO_ARGS = _text("executor") + _text("default") + _text("args")
_KWARGS_TO_NAME = _text("kwargs") + b"}" + _text("name")
_MISFIRE = _text("misfire_grace_time")
_COALESCE = _text("coalesce")
_MAX_INSTANCES = _text("max_instances")
_NEXT_RUN_TIME = _text("next_run_time")
_CLOSE = b"u."  # SETITEMS, STOP


def loads(blob: bytes) -> dict[str, Any]:
    state = pickle.loads(blob)
    if not isinstance(state, dict):
        raise ValueError("job_state is not a mapping")
    return state


def timestamp(moment: datetime | None) -> float | None:
    """The `next_run_time` column: UTC epoch seconds, as SQLAlchemyJobStore writes it."""
    return moment.timestamp() if moment is not None else None
