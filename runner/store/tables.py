"""Table definitions. `apscheduler_jobs` matches APScheduler 3's SQLAlchemyJobStore exactly."""

from __future__ import annotations

from sqlalchemy import (
    Boolean,
    Column,
    DateTime,
    Float,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    Unicode,
    UniqueConstraint,
)

SCHEMA_VERSION = 2
"""2: `runner_jobs` may hold jobs added at run time (file `api`, line 0). A database is raised
to 2 when the first such job is added, so an older runner refuses it instead of pruning them."""
SPEC_FORMAT = 1
"""Version of the stored job spec; a row with a higher one was written by a newer runner."""

metadata = MetaData()

apscheduler_jobs = Table(
    "apscheduler_jobs",
    metadata,
    Column("id", Unicode(191), primary_key=True),
    Column("next_run_time", Float(25), index=True),
    Column("job_state", LargeBinary, nullable=False),
)

runner_jobs = Table(
    "runner_jobs",
    metadata,
    Column("id", Unicode(191), primary_key=True),
    Column("spec", Text, nullable=False),
    Column("spec_hash", String(64), nullable=False),
    Column("spec_format", Integer, nullable=False),
    Column("file", Text, nullable=False),
    Column("line", Integer, nullable=False),
    Column("applied_at", DateTime(timezone=True), nullable=False),
    Column("applied_by", Text, nullable=False),
    # Operational pause from `runner pause` or the API; the YAML's `paused` is in spec.
    Column("paused_override", Boolean, nullable=True),
)

runner_meta = Table(
    "runner_meta",
    metadata,
    Column("key", String(64), primary_key=True),
    Column("value", Text, nullable=False),
)

runner_runs = Table(
    "runner_runs",
    metadata,
    Column("run_id", Integer, primary_key=True, autoincrement=True),
    Column("job_id", Unicode(191), nullable=False),
    Column("scheduled_at", DateTime(timezone=True), nullable=False),
    Column("attempt", Integer, nullable=False),
    Column("status", String(16), nullable=False),
    Column("started_at", DateTime(timezone=True), nullable=True),
    Column("finished_at", DateTime(timezone=True), nullable=True),
    Column("duration", Float, nullable=True),
    Column("error", Text, nullable=True),
    Column("traceback", Text, nullable=True),
    Column("node", Text, nullable=False),
    # One row per (job, fire, attempt): the claim that stops two nodes running one fire.
    UniqueConstraint("job_id", "scheduled_at", "attempt", name="uq_runner_runs_fire"),
    Index("ix_runner_runs_job_started", "job_id", "run_id"),
    Index("ix_runner_runs_status", "status"),
)

runner_nodes = Table(
    "runner_nodes",
    metadata,
    Column("node", Text, primary_key=True),
    Column("started_at", DateTime(timezone=True), nullable=False),
    Column("heartbeat_at", DateTime(timezone=True), nullable=False),
    Column("stopped_at", DateTime(timezone=True), nullable=True),
)

runner_lease = Table(
    "runner_lease",
    metadata,
    Column("name", String(32), primary_key=True),
    Column("holder", Text, nullable=True),
    Column("since", DateTime(timezone=True), nullable=True),
    Column("lease_until", DateTime(timezone=True), nullable=True),
    Column("term", Integer, nullable=False, default=0),
)

runner_file_cache = Table(
    "runner_file_cache",
    metadata,
    # What the last successful apply found in each job file, so that the next one can skip
    # reading files whose bytes and validation settings are unchanged (runner.unchanged).
    # A memo of a pure function of those inputs, not a record of the store: a runner that does
    # not know this table (schema version 2 is unchanged) may apply meanwhile, and the memo
    # stays true. `ensure` creates it in a database made by an older runner.
    Column("file", Text, primary_key=True),
    Column("digest", String(64), nullable=False),
    Column("fingerprint", String(64), nullable=False),
    Column("jobs", Text, nullable=False),
    Column("checks", Text, nullable=False),
)
