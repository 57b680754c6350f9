"""The quick read of plain job files gives what the full read gives, or leaves the file to it.

`read_plain` skips the position of every value deeper than a job's own keys; `parse_file`
uses it only for a plain file without a single problem, and reads any other file again in
full, so every problem keeps its exact FILE:LINE:COL."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from runner import jobfiles
from runner.yamlread import MAX_DEPTH, MAX_VALUES, QUICK_DEPTH, read_plain, read_yaml_all

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

from gen_100k import generate

REPO = Path(__file__).resolve().parents[2]

PLAIN = [
    "",
    "# only a comment\n",
    "hello\n",
    "[1, 2, 3]\n",
    "jobs: []\n",
    "jobs:\n  - id: a\n    target: runner.tasks:heartbeat\n    trigger: {interval: 1h}\n",
    "jobs:\n- id: a\n  target: runner.tasks:heartbeat\n  trigger:\n    cron: '0 3 * * *'\n",
    "a: \"quoted\"\nb: 'single'\nc: plain words here\nd: 12\ne: -3.5e3\nf: 0x1F\ng: 0o17\n",
    "a: null\nb: ~\nc:\nd: true\ne: False\nf: .inf\ng: -.Inf\nh: 1.\ni: .5\n",
    "a: {b: {c: {d: {e: [1, {f: [[], {}]}]}}}}\n",
    "a: !!str 0755\nb: !!str yes\n",
    'jobs:\n  - {id: "x", target: "m:f", trigger: {at: "2030-01-01T00:00:00"}}\n',
    "defaults:\n  timezone: Europe/Berlin\njobs:\n  - id: a\n    target: m:f\n",
    "a: |\n  block\n  text\nb: >\n  folded\n  text\n",
    "long: " + "x" * 5000 + "\n",
    "unicode: héllo wörld ✓\n'key with spaces': 1\n\"1\": one\n",
    "a: " + "[" * (MAX_DEPTH - 1) + "]" * (MAX_DEPTH - 1) + "\n",
    "---\na: 1\n...\n",
    "%YAML 1.2\n---\na: 1\n",
    "a: 123456789012345678901234567890\n",
]

NOT_PLAIN = [
    "a: &x 1\nb: *x\n",
    "a: &x {k: v}\nb: [*x, *x]\n",
    "base: &b {x: 1}\none:\n  <<: *b\n  y: 2\n",
    '"<<": 1\n',
    "a: 1\na: 2\n",
    "a: yes\n",
    "a: [1, {b: [no]}]\n",
    "a: 0755\n",
    "a: 1:30\n",
    "a: 1_000\n",
    "a: .nan\n",
    "a: !!int 3\n",
    "a: !custom 3\n",
    "a: ! 3\n",
    "a: !!map {b: 1}\n",
    "a: !!seq [1]\n",
    "!!str a: 1\n",
    "? [a, b]\n: 1\n",
    "? {a: 1}\n: 1\n",
    "a: 1\n---\nb: 2\n",
    "a: [1, 2\n",
    "a:\n\t- b\n",
    "a: " + "[" * MAX_DEPTH + "]" * MAX_DEPTH + "\n",
    "a: " + "1" * 5000 + "\n",
    "\x00\n",
    "&k name: 1\n",
]


def _corpus() -> list[bytes]:
    texts = [t.encode() for t in PLAIN + NOT_PLAIN]
    texts += [b"\xff\xfe not utf-8\n", b"a: \xc3\n"]
    texts += [p.read_bytes() for p in (REPO / "jobs.d").glob("*.yaml")]
    texts += [(REPO / "example.jobs.yaml").read_bytes()]
    return texts


def _shallow(positions: dict[tuple[str | int, ...], tuple[int, int]]) -> dict[object, object]:
    return {path: where for path, where in positions.items() if len(path) <= QUICK_DEPTH}


@pytest.mark.parametrize("text", PLAIN)
def test_a_plain_file_reads_as_the_full_read_reads_it(text: str) -> None:
    quick = read_plain(text.encode())
    assert quick is not None
    value, positions, problems = read_yaml_all(text.encode())
    assert problems == []
    assert quick[0] == value
    assert quick[1] == _shallow(positions)


@pytest.mark.parametrize("text", NOT_PLAIN)
def test_anything_else_is_left_to_the_full_read(text: str) -> None:
    assert read_plain(text.encode()) is None


def test_too_many_values_are_left_to_the_full_read() -> None:
    assert read_plain(("a: [" + "1, " * (MAX_VALUES + 1) + "1]\n").encode()) is None
    assert read_plain(("a: [" + "1, " * (MAX_VALUES // 2) + "1]\n").encode()) is not None


@pytest.mark.parametrize("data", _corpus())
def test_parse_file_gives_what_the_full_read_gives(data: bytes) -> None:
    assert jobfiles.parse_file("f.yaml", data) == jobfiles.parse_file("f.yaml", data, quick=False)


def _job_file(tmp_path: Path) -> str:
    generate(tmp_path, files=1, jobs_per_file=100)
    return (tmp_path / "tenants-0000.yaml").read_text(encoding="utf-8")


def _line_of(text: str, needle: str) -> int:
    return text.splitlines().index(needle) + 1


MUTATIONS = [
    ('      cron: "0 0 * * *"', '      cron: "0 0 30 2 *"'),  # never fires
    ('      cron: "0 0 * * *"', '      cron: "0 0 * * *"\n      croon: x'),  # unknown key
    ('      cron: "0 0 * * *"', '      cron: "0 0 * * *"\n      cron: "1 0 * * *"'),  # twice
    ('      cron: "0 0 * * *"', "      cron: no"),  # YAML 1.1 boolean
    ('      cron: "0 0 * * *"', "      cron: 0755"),  # YAML 1.1 octal
    ('      cron: "0 0 * * *"', "      cron: !!int 5"),  # a tag
    ('      cron: "0 0 * * *"', "      cron: [a, b"),  # syntax
    ("      timezone: UTC", "      timezone: Mars/Olympus"),
    ("  - id: tenant-000000", "  - id: tenant-000099"),  # an id written twice
    ('    kwargs: {message: "tenant 0"}', "    kwargs: &k {message: x}\n    args: *k"),
]


@pytest.mark.parametrize(("old", "new"), MUTATIONS)
def test_a_problem_deep_in_a_file_is_located_as_by_the_full_read(
    tmp_path: Path, old: str, new: str
) -> None:
    text = _job_file(tmp_path)
    assert old in text
    data = text.replace(old, new, 1).encode()
    quick = jobfiles.parse_file("f.yaml", data)
    assert quick == jobfiles.parse_file("f.yaml", data, quick=False)
    assert quick[1], "each mutation makes a problem"


def test_an_error_in_a_late_job_keeps_its_exact_line_and_column(tmp_path: Path) -> None:
    text = _job_file(tmp_path)
    lines = text.splitlines()
    cron = _line_of(text, "  - id: tenant-000098") + 4  # id, target, kwargs, trigger, cron
    assert lines[cron - 1].startswith("      cron: ")
    lines[cron - 1] = '      cron: "0 0 30 2 *"'
    jobs, problems = jobfiles.parse_file("f.yaml", "\n".join(lines).encode())
    assert len(jobs) == 99
    (problem,) = problems
    assert (problem.line, problem.column) == (cron, 7)
    assert problem.job == "tenant-000098"


def test_a_valid_file_gives_every_job_its_line_and_field_positions(tmp_path: Path) -> None:
    text = _job_file(tmp_path)
    jobs, problems = jobfiles.parse_file("f.yaml", text.encode())
    assert problems == [] and len(jobs) == 100
    assert (jobs, problems) == jobfiles.parse_file("f.yaml", text.encode(), quick=False)
    line = _line_of(text, "  - id: tenant-000057")
    assert jobs[57].line == line
    assert jobs[57].fields == {
        "id": (line, 5),
        "target": (line + 1, 5),
        "kwargs": (line + 2, 5),
        "trigger": (line + 3, 5),
    }
