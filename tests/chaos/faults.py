"""Making the core's database refuse writes while it runs.

The tests run as root, and ``chmod`` does not stop root from writing, so the directory and its files
get the immutable flag instead (``chattr +i``: ext2/3/4, xfs, btrfs; needs CAP_LINUX_IMMUTABLE). That
fails every write, also through files the core already holds open, as a read-only disk would. The
``-shm`` files (SQLite's shared-memory index) keep their flag off: SQLite maps them into memory, and a
store into an immutable mapping kills the process with SIGBUS — that would be a kill, tested elsewhere.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path


def immutable_unsupported(directory: Path) -> str | None:
    """Why the immutable flag cannot be used in `directory`, or None when it can."""
    if shutil.which("chattr") is None:
        return "chattr is not installed"
    with tempfile.NamedTemporaryFile(dir=directory) as probe:
        done = subprocess.run(["chattr", "+i", probe.name], capture_output=True, text=True, check=False)
        if done.returncode != 0:
            return f"chattr +i fails here: {done.stderr.strip()}"
        try:
            with open(probe.name, "a") as f:
                f.write("x")
            return "chattr +i does not stop writes here"
        except PermissionError:
            return None
        finally:
            subprocess.run(["chattr", "-i", probe.name], check=True)


def write_targets(data_dir: Path) -> list[Path]:
    """The directory, its database files and their write-ahead logs (not the -shm files)."""
    files = [p for p in sorted(data_dir.iterdir()) if p.name.endswith((".db", ".db-wal"))]
    return [data_dir, *files]


@contextlib.contextmanager
def read_only(data_dir: Path) -> Iterator[list[Path]]:
    """Writes to `data_dir`'s databases fail while inside; the flag is always removed again."""
    targets = write_targets(data_dir)
    try:
        subprocess.run(["chattr", "+i", *map(str, targets)], check=True, capture_output=True)
        yield targets
    finally:
        subprocess.run(["chattr", "-i", *map(str, targets)], check=True, capture_output=True)
