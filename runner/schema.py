"""JSON Schema of a job file, generated from the models so editors and the runner agree."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict

from runner import models

SCHEMA_ID = "https://runner.invalid/job-file.schema.json"


def _required_unless_defaulted(name: str) -> dict[str, Any]:
    """A job must set `name` unless the file's defaults do."""
    return {
        "if": {"required": ["defaults"], "properties": {"defaults": {"required": [name]}}},
        "else": {"properties": {"jobs": {"items": {"required": [name]}}}},
    }


def _program_required() -> dict[str, Any]:
    """A job sets a target or a command, unless the file's defaults give a target."""
    either = {"anyOf": [{"required": ["target"]}, {"required": ["command"]}]}
    return {
        "if": {"required": ["defaults"], "properties": {"defaults": {"required": ["target"]}}},
        "else": {"properties": {"jobs": {"items": either}}},
    }


class _JobFileSchema(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        title="runner job file",
        json_schema_extra={"allOf": [_program_required(), _required_unless_defaulted("trigger")]},
    )
    defaults: models.JobFields | None = None
    jobs: list[models.JobEntry]


def job_file_schema() -> dict[str, Any]:
    schema = _JobFileSchema.model_json_schema(mode="validation")
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["$id"] = SCHEMA_ID
    return schema
