"""Validation messages in the words of a job file, not of the validation library.

pydantic speaks of "Input", "dictionary or instance of Trigger" and regular expressions; a
YAML author thinks in mappings, lists, ids and durations.
"""

from __future__ import annotations

from typing import Any

from pydantic_core import ErrorDetails

_EXPECTED = {
    "list_type": "expected a list",
    "dict_type": "expected a mapping",
    "model_type": "expected a mapping",
    "model_attributes_type": "expected a mapping",
    "bool_type": "expected true or false",
    "int_type": "expected a whole number",
    "int_from_float": "expected a whole number",
    "float_type": "expected a number",
    "string_type": "expected a string",
    "datetime_type": "expected a date and time such as 2027-01-01T09:00:00+01:00",
    "datetime_parsing": "expected a date and time such as 2027-01-01T09:00:00+01:00",
    "datetime_from_date_parsing": "expected a date and time such as 2027-01-01T09:00:00+01:00",
}

ID_RULE = "letters, digits, '.', '_' and '-', starting with a letter or digit"


def plain(error: ErrorDetails) -> str:
    """One error of a pydantic ValidationError as a job-file author would put it."""
    kind = error["type"]
    ctx: dict[str, Any] = dict(error.get("ctx") or {})
    loc = error.get("loc") or ()
    if kind in _EXPECTED:
        return _EXPECTED[kind]
    if kind == "string_pattern_mismatch":
        if loc and loc[-1] == "id":
            return f"{error.get('input')!r} is not a valid id: use {ID_RULE}"
        return f"does not have the expected form ({ctx.get('pattern')})"
    if kind == "string_too_long":
        return f"longer than {ctx.get('max_length')} characters"
    if kind in ("greater_than_equal", "greater_than", "less_than_equal", "less_than"):
        return error["msg"].replace("Input should be", "must be")
    message = error["msg"]
    for prefix in ("Value error, ", "Assertion failed, "):
        message = message.removeprefix(prefix)
    return message.replace("Input should be", "must be").replace("String should", "must")
