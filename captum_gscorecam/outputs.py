"""Every file the package writes (figures, maps, score tables, index files, results, run
metadata, the app's downloads) is written here, and its path checked here first.

- A file is written under a temporary name in its own folder, flushed to the disk (``fsync``)
  and renamed over its final name: the final name holds the old content or the whole new one,
  never a part of it. The temporary file is removed on any failure.
- :func:`check_outputs`, called before any work, refuses an output that is one of the inputs
  (the same path, a symbolic link to it, or a hard link), a folder or a device where a file
  goes, a file where a folder goes, two outputs that are one file, and a folder that cannot
  take a new file (read-only, no permission, full, a pseudo-filesystem such as ``/proc``).
- Every failure is an :class:`OutputError`, an ``OSError`` whose message is one line naming
  the path and the reason (``cannot write results/run.json: no space left on the device``).

Nothing here imports torch or matplotlib (a figure is saved through its own ``savefig``);
numpy is imported only to write ``.npy`` files.
"""

from __future__ import annotations

import errno
import json
import os
import stat
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np

__all__ = [
    "OutputError",
    "as_output_error",
    "atomic_file",
    "check_outputs",
    "file_kind",
    "make_folder",
    "write_bytes",
    "write_figure",
    "write_json",
    "write_npy",
    "write_npy_slices",
    "write_text",
]

PathLike = str | os.PathLike[str]

# Why a write failed, by errno; anything else is the system's own wording (os.strerror).
_REASONS = {
    errno.ENOSPC: "no space left on the device",
    errno.EDQUOT: "the disk quota is exceeded",
    errno.EROFS: "the file system is read-only",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
    errno.EISDIR: "it is a folder; expected a file",
    errno.ENOTDIR: "a part of its path is a file, not a folder",
    errno.ENAMETOOLONG: "the name is too long",
    errno.EFBIG: "the file is too large for the file system",
    errno.EIO: "input/output error (a failing disk or a lost network share?)",
}
_PROBE_PREFIX = ".gscorecam-check-"


class OutputError(OSError):
    """An output that cannot be written, with a one-line message naming it and the reason.

    An ``OSError`` (``errno`` set when the system gave one; ``filename`` the output), so
    ``except OSError`` catches it too. The command line prints its message as one line.
    """

    def __init__(self, path: PathLike, reason: str, code: int | None = None) -> None:
        super().__init__(code, reason, os.fspath(path))
        self.path = Path(path)
        self.reason = reason

    def __str__(self) -> str:
        return f"cannot write {_shown(self.path)}: {self.reason}"


def _shown(path: PathLike) -> str:
    """A path as one line: as written, or quoted with escapes if it holds a line break."""
    text = os.fspath(path)
    return text if text.isprintable() else repr(text)


def as_output_error(path: PathLike, error: OSError) -> OutputError:
    """``error``, raised while writing ``path``, as an OutputError naming ``path``."""
    if isinstance(error, OutputError):
        return error
    return OutputError(path, _reason(error, Path(path).parent), error.errno)


def _reason(error: OSError, folder: Path) -> str:
    if error.errno == errno.ENOENT and folder.is_dir():
        return f"{_shown(folder)} cannot hold files (a pseudo-filesystem such as /proc or /sys?)"
    if error.errno in _REASONS:
        return _REASONS[error.errno]
    return error.strerror or type(error).__name__


def file_kind(mode: int) -> str:
    """What a path that is not a regular file is, from its ``st_mode``, for a message: ``a
    folder``, ``a FIFO (named pipe)``, ``a socket``, ``a character device``...
    """
    for test, name in (
        (stat.S_ISDIR, "a folder"),
        (stat.S_ISFIFO, "a FIFO (named pipe)"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
    ):
        if test(mode):
            return name
    return "not a regular file"


# ---------------------------------------------------------------- checks, before any work


def check_outputs(outputs: Iterable[PathLike], inputs: Iterable[PathLike] = ()) -> None:
    """Refuse, before any work, outputs that would destroy an input or cannot be written.

    Args:

        outputs (iterable of str or path): The files about to be written (the folders they
                    sit in are created when written).
        inputs (iterable of str or path, optional): The files read; an output that is one of
                    them, by resolved path or as the same file (``os.path.samefile``: a hard
                    link), is refused.
                    Default: ()

    Raises:
        OutputError: naming the first output that is an input, is written twice, is a folder
        or a device, has a file where one of its folders goes, or sits in a folder that cannot
        take a new file (tried by creating, writing and removing a small hidden file).
    """
    sources = [(Path(p), os.path.realpath(p), _identity(p)) for p in inputs]
    seen: dict[str, Path] = {}
    probed: set[Path] = set()
    for output in outputs:
        path = Path(output)
        real = os.path.realpath(path)
        identity = _identity(real)
        for source, source_real, source_identity in sources:
            if real == source_real or (identity is not None and identity == source_identity):
                raise OutputError(
                    path, f"it is the input {_shown(source)}, which writing would destroy"
                )
        if real in seen:
            raise OutputError(path, f"it is also the output {_shown(seen[real])}")
        seen[real] = path
        with suppress(FileNotFoundError, NotADirectoryError):
            mode = os.stat(real).st_mode
            if not stat.S_ISREG(mode):
                code = errno.EISDIR if stat.S_ISDIR(mode) else None
                raise OutputError(path, f"it is {file_kind(mode)}; expected a file", code)
        folder = _existing_folder(path, Path(real).parent)
        if folder not in probed:
            _probe(path, folder)
            probed.add(folder)


def _identity(path: PathLike) -> tuple[int, int] | None:
    try:
        info = os.stat(path)
    except OSError:
        return None
    return info.st_dev, info.st_ino


def _existing_folder(path: Path, folder: Path) -> Path:
    """The nearest folder of ``folder`` and its parents that exists; a file there is refused."""
    while not os.path.lexists(folder) and folder != folder.parent:
        folder = folder.parent
    if not folder.is_dir():
        raise OutputError(
            path, f"{_shown(folder)} is a file, not a folder, and lies on its path", errno.ENOTDIR
        )
    return folder


def _probe(path: Path, folder: Path) -> None:
    """Create, write one byte to and remove a hidden file in ``folder``."""
    probe = None
    try:
        fd, probe = tempfile.mkstemp(prefix=_PROBE_PREFIX, dir=folder)
        try:
            os.write(fd, b"\0")
        finally:
            os.close(fd)
    except OSError as error:
        raise OutputError(path, _reason(error, folder), error.errno) from error
    finally:
        if probe is not None:
            with suppress(OSError):
                os.unlink(probe)


# ---------------------------------------------------------------- writing


def make_folder(path: PathLike) -> Path:
    """Create the folder ``path`` and its parents if missing; failures as an OutputError."""
    folder = Path(path)
    _make_folder(folder, folder)
    return folder


def _make_folder(folder: Path, output: Path) -> None:
    """Create ``folder`` with its parents; a failure is an OutputError naming ``output``."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        what = "it is" if folder == output else f"{_shown(folder)} is"
        raise OutputError(output, f"{what} a file; expected a folder", errno.ENOTDIR) from None
    except NotADirectoryError:
        _existing_folder(output, folder)  # names the file in the way
        raise
    except OSError as error:
        raise OutputError(output, _reason(error, folder.parent), error.errno) from error


@contextmanager
def atomic_file(path: PathLike, binary: bool = True) -> Iterator[IO[Any]]:
    """A file object whose content replaces ``path`` whole when the block ends without error.

    The data goes to a hidden temporary file in the same folder (created with its parents if
    missing), is flushed and synced to the disk, and is renamed over ``path`` (a symbolic link
    keeps pointing to the file it names, which is the one replaced). A new file gets the
    permissions the umask allows, an existing one keeps its own. On any error the temporary
    file is removed and ``path`` is left as it was.

    Args:

        path (str or path): The file to write.
        binary (bool, optional): Bytes (True) or UTF-8 text with Unix line ends (False).
                    Default: True

    Raises:
        OutputError: when the file cannot be written (disk full, read-only, no permission,
        a folder in the way...), naming ``path``. Errors raised inside the block, other than
        ``OSError``, pass through unchanged.
    """
    shown = Path(path)
    target = Path(os.path.realpath(path))
    temporary: str | None = None
    try:
        if target.is_dir():
            raise OutputError(shown, _REASONS[errno.EISDIR], errno.EISDIR)
        _make_folder(target.parent, shown)
        mode = _mode_for(target)
        fd, temporary = tempfile.mkstemp(prefix=f".{target.name[:64]}.", dir=target.parent)
        with os.fdopen(fd, "wb" if binary else "w", **({} if binary else _TEXT)) as file:
            yield file
            file.flush()
            os.fsync(file.fileno())
        os.chmod(temporary, mode)
        os.replace(temporary, target)
        temporary = None
        _sync_folder(target.parent)
    except OutputError:
        raise
    except OSError as error:
        raise OutputError(shown, _reason(error, target.parent), error.errno) from error
    finally:
        if temporary is not None:
            with suppress(OSError):
                os.unlink(temporary)


_TEXT = {"encoding": "utf-8", "newline": "\n"}


def _mode_for(target: Path) -> int:
    """An existing file's permissions, else those ``open`` would give a new file."""
    with suppress(OSError):
        return stat.S_IMODE(os.stat(target).st_mode)
    return 0o666 & ~_umask()


def _umask() -> int:
    """The process's umask, read without changing it where the system allows."""
    with suppress(OSError, ValueError), open("/proc/self/status") as status:
        for line in status:
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _sync_folder(folder: Path) -> None:
    """Make a rename in ``folder`` durable; file systems without folder sync are left be."""
    with suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def write_bytes(path: PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` whole (see :func:`atomic_file`); returns the path."""
    with atomic_file(path) as file:
        file.write(data)
    return Path(path)


def write_text(path: PathLike, text: str) -> Path:
    """Write ``text`` as UTF-8 to ``path`` whole (see :func:`atomic_file`); returns the path."""
    with atomic_file(path, binary=False) as file:
        file.write(text)
    return Path(path)


def write_json(path: PathLike, value: Any, indent: int | None = 1) -> Path:
    """Write ``value`` as JSON (and a final newline) to ``path`` whole; returns the path.

    Raises a ValueError (NaN or infinity, which JSON cannot hold) or a TypeError (a value JSON
    cannot hold) before anything is written.
    """
    return write_text(path, json.dumps(value, indent=indent, allow_nan=False) + "\n")


def write_npy(path: PathLike, array: np.ndarray) -> Path:
    """Write ``array`` as a ``.npy`` file (``np.load`` reads it; no pickles) to ``path`` whole."""
    import numpy as np

    with atomic_file(path) as file:
        np.save(file, np.asanyarray(array), allow_pickle=False)
    return Path(path)


def write_npy_slices(
    path: PathLike, slices: Iterable[np.ndarray], shape: tuple[int, ...], dtype: Any
) -> Path:
    """Write a ``.npy`` array of ``shape`` from its slices along the first axis, one at a time.

    Only one slice is held in memory at once; ``np.load(path)`` gives the whole array. Each
    slice must have the shape ``shape[1:]`` (it is cast to ``dtype``), and there must be
    ``shape[0]`` of them; otherwise a ValueError is raised and nothing is written.
    """
    import numpy as np

    dtype = np.dtype(dtype)
    header = {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False}
    count = 0
    with atomic_file(path) as file:
        np.lib.format.write_array_header_1_0(file, {**header, "shape": tuple(shape)})
        for part in slices:
            part = np.ascontiguousarray(part, dtype=dtype)
            if part.shape != tuple(shape[1:]) or count >= shape[0]:
                raise ValueError(
                    f"slices: expected {shape[0]} slices of shape {tuple(shape[1:])}, got one "
                    f"of shape {part.shape} at index {count}"
                )
            file.write(part.tobytes())
            count += 1
        if count != shape[0]:
            raise ValueError(f"slices: expected {shape[0]} slices, got {count}")
    return Path(path)


def write_figure(path: PathLike, figure: Any, **savefig_kwargs: Any) -> Path:
    """Save a matplotlib figure to ``path`` whole, in the format its suffix names.

    ``savefig_kwargs`` go to ``figure.savefig`` (``dpi=100``...). An unknown suffix is
    matplotlib's ValueError, raised before anything is written.
    """
    suffix = Path(path).suffix.lower().lstrip(".")
    with atomic_file(path) as file:
        figure.savefig(file, format=suffix or None, **savefig_kwargs)
    return Path(path)
