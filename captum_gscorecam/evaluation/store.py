"""An evaluation's output folder: its settings, the JSON-line shards of results, and its lock.

Each finished image is one line ``{"settings": D, "image_id": ..., "rows": [...]}`` of
``results.jsonl`` (``results.rank{r}.jsonl`` under torchrun), where ``D`` is a digest of the
run's settings, which ``run.json`` holds in full. Every line thus says which settings produced
it: a folder whose lines carry other settings is refused, whether or not ``run.json`` is still
there, so results of two settings are never mixed. A folder with a ``run.json`` but no results
(a run refused or crashed before its first image) binds nothing. On resume a damaged line (not
UTF-8, not JSON, not an object, missing keys, rows that do not match the image's examples and
methods) is dropped from its shard with one warning counting them, and its image is computed
again. ``evaluate.lock`` keeps a second run off a folder in use; the lock is the kernel's
(``flock``), so a killed run leaves no stale lock behind.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import socket
import warnings
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from numbers import Real
from pathlib import Path

from captum_gscorecam.outputs import as_output_error, write_bytes

__all__ = [
    "LOCK_FILE",
    "RUN_FILE",
    "Records",
    "append_line",
    "append_record",
    "check_resumable",
    "locked",
    "output_files",
    "read_records",
    "settings_digest",
]

RUN_FILE = "run.json"
LOCK_FILE = "evaluate.lock"
SHARDS = "results*.jsonl"
RESULTS_FILE = "results.json"
# What evaluation.report.write_report writes in a run's folder.
REPORT_FILES = ("results.md", "results.png")

Row = dict[str, object]
# The (method, prompt) of each row an image must have, in order.
Expected = Mapping[str, Sequence[tuple[str, str]]]


def settings_digest(config: Mapping[str, object]) -> str:
    """A short digest of a run's settings, stored on every result line.

    ``config["run"]["weights"]``, a description of the run's ``model`` and ``pretrained``
    (which are digested), is left out, so folders written before it was recorded resume.
    """
    run = config.get("run")
    if isinstance(run, Mapping) and "weights" in run:
        config = {**config, "run": {k: v for k, v in run.items() if k != "weights"}}
    return hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:16]


@dataclass
class Records:
    """What the shards of a folder hold.

    Attributes:
        rows: Rows per image, from the first valid line of each image in ``expected``.
        damaged: Indices of the lines that failed validation, per shard.
        other_settings: Lines written under other settings.
    """

    rows: dict[str, list[Row]] = field(default_factory=dict)
    damaged: dict[Path, list[int]] = field(default_factory=dict)
    other_settings: int = 0


def check_resumable(out_dir: str | Path, config: Mapping[str, object]) -> None:
    """Raise a ValueError naming ``out`` if ``out_dir`` holds results of other settings."""
    refuse_other_settings(Path(out_dir), read_records(out_dir, config, {}, ()))


def refuse_other_settings(out_dir: Path, records: Records) -> None:
    """Raise a ValueError naming ``out`` if ``records`` hold lines of other settings."""
    if records.other_settings:
        raise ValueError(
            f"out: {out_dir} holds results of a run with other settings "
            f"({records.other_settings} image(s); see {out_dir / RUN_FILE}); "
            "choose another output folder"
        )


def read_records(
    out_dir: str | Path,
    config: Mapping[str, object],
    expected: Expected,
    row_keys: Sequence[str],
) -> Records:
    """Read every shard, validating each line against the settings and the expected rows.

    A line of an image outside ``expected`` is valid if it is an object with this run's
    settings; its rows are not returned. Lines of other settings are counted, not returned.
    """
    digest = settings_digest(config)
    records = Records()
    for path in sorted(Path(out_dir).glob(SHARDS)):
        for index, line in enumerate(path.read_bytes().splitlines()):
            record = _parse(line)
            if not line.strip():
                continue
            if record is not None and record.get("settings") not in (None, digest):
                records.other_settings += 1
            elif record is None or not _valid(record, digest, expected, row_keys):
                records.damaged.setdefault(path, []).append(index)
            elif record["image_id"] in expected:
                records.rows.setdefault(record["image_id"], record["rows"])
    return records


def drop_damaged(records: Records) -> None:
    """Rewrite the shards with damaged lines without them, and warn once with their count."""
    if not records.damaged:
        return
    for path, indices in records.damaged.items():
        lines = path.read_bytes().splitlines()
        drop = set(indices)
        kept = [line + b"\n" for i, line in enumerate(lines) if i not in drop]
        write_bytes(path, b"".join(line for line in kept if line.strip()))
    where = ", ".join(f"{len(i)} in {path.name}" for path, i in records.damaged.items())
    total = sum(len(indices) for indices in records.damaged.values())
    warnings.warn(
        f"out: {total} damaged result line(s) dropped ({where}); their images are computed again",
        stacklevel=3,
    )


def append_record(
    path: Path, config: Mapping[str, object], image_id: str, rows: Sequence[Row]
) -> None:
    """Append one image's line, after a newline if a crash left the last line unfinished."""
    record = {"settings": settings_digest(config), "image_id": image_id, "rows": list(rows)}
    append_line(path, record)


def append_line(path: Path, record: Mapping[str, object]) -> None:
    """Append ``record`` as one JSON line, after a newline if a crash left the last line
    unfinished; an OutputError naming ``path`` if it cannot be written.
    """
    try:
        with path.open("a+b") as file:
            if file.seek(0, os.SEEK_END):
                file.seek(-1, os.SEEK_END)
                if file.read(1) != b"\n":
                    file.write(b"\n")
            file.write(json.dumps(record).encode() + b"\n")
    except OSError as error:  # a full disk leaves at most an unfinished last line: resumable
        raise as_output_error(path, error) from error


def _parse(line: bytes) -> dict[str, object] | None:
    """A line's JSON object, or None for a line that is not one."""
    try:
        record = json.loads(line.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None
    return record if isinstance(record, dict) else None


def _valid(
    record: Mapping[str, object],
    digest: str,
    expected: Expected,
    row_keys: Sequence[str],
) -> bool:
    """Whether a line is one of this run's, with the rows its image needs (if it is expected)."""
    image_id, rows = record.get("image_id"), record.get("rows")
    if record.get("settings") != digest or not isinstance(image_id, str):
        return False
    if image_id not in expected:
        return True
    pairs = expected[image_id]
    if not isinstance(rows, list) or len(rows) != len(pairs):
        return False
    for row, (method, prompt) in zip(rows, pairs, strict=True):
        if not isinstance(row, dict) or (row.get("method"), row.get("prompt")) != (method, prompt):
            return False
        if not _valid_row(row, image_id, row_keys):
            return False
    return True


FLAGS = ("pointing", "box_hit")
OPTIONAL = ("mask_iou",)


def _valid_row(row: Mapping[str, object], image_id: str, row_keys: Sequence[str]) -> bool:
    """Every key a row must have, each of the right kind."""
    if row.get("image_id") != image_id or not all(key in row for key in row_keys):
        return False
    for key in row_keys:
        value = row[key]
        if key in FLAGS:
            ok = isinstance(value, bool)
        elif key == "iou_curve":
            ok = isinstance(value, list) and all(_number(v) for v in value)
        elif key in ("image_id", "prompt", "method"):
            ok = isinstance(value, str)
        else:
            ok = _number(value) or (key in OPTIONAL and value is None)
        if not ok:
            return False
    return True


def _number(value: object) -> bool:
    return isinstance(value, Real) and not isinstance(value, bool)


@contextmanager
def locked(out_dir: str | Path, command: str = "evaluate") -> Iterator[None]:
    """Hold ``out_dir/<command>.lock`` for the block; raise a ValueError if a run holds it.

    The lock file names its holder (pid and host) for the message; the kernel releases the lock
    when the holder exits, however it exits.
    """
    path = Path(out_dir) / f"{command}.lock"
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as error:
            raise as_output_error(path, error) from error
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.read(fd, 200).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise ValueError(
                f"out: {out_dir} is in use by another {command} run ({holder}); "
                "wait for it to finish or choose another output folder"
            ) from None
        if _same_file(fd, path):  # not unlinked by a holder that finished meanwhile
            break
        os.close(fd)
    try:
        os.ftruncate(fd, 0)
        os.write(fd, f"pid {os.getpid()} on {socket.gethostname()}".encode())
        yield
    finally:
        path.unlink(missing_ok=True)
        os.close(fd)


def _same_file(fd: int, path: Path) -> bool:
    try:
        return os.stat(path).st_ino == os.fstat(fd).st_ino
    except FileNotFoundError:
        return False


def output_files(out_dir: str | Path, world: int = 1) -> list[Path]:
    """The files an evaluation writes in ``out_dir`` with ``world`` ranks, for
    ``outputs.check_outputs`` before a model loads.
    """
    out_dir = Path(out_dir)
    shards = ["results.jsonl"] if world == 1 else [f"results.rank{r}.jsonl" for r in range(world)]
    names = [RUN_FILE, LOCK_FILE, *shards, RESULTS_FILE, *REPORT_FILES]
    return [out_dir / name for name in names]
