"""Reading a local file whole: the local storage backend's reads, and the zip's packer
processes', which read small files by the path storage gave them. A module of its own
because a packer starts once per export and imports nothing heavy (not storage)."""

from __future__ import annotations

import os


def read_whole(path: str, size: int) -> bytes:
    """A file whose size a listing gave: at most ``size + 1`` bytes, so growth shows."""
    fd = os.open(path, os.O_RDONLY)
    try:
        data = os.read(fd, size + 1)  # a regular file reads whole unless it changed
        while len(data) <= size and (more := os.read(fd, size + 1 - len(data))):
            data += more
        return data
    finally:
        os.close(fd)
