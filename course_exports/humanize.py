"""Numbers as people read them, in mails, artifacts and summaries."""

from __future__ import annotations


def human_size(size_bytes: int) -> str:
    """Decimal units, as file managers and browsers show downloads: ``3.4 MB``."""
    if size_bytes < 1000:
        return "1 byte" if size_bytes == 1 else f"{size_bytes} bytes"
    value = float(size_bytes)
    for unit in ("kB", "MB", "GB", "TB", "PB"):
        value /= 1000
        # Round before comparing so 999.96 kB reads "1.0 MB", not "1000.0 kB".
        if round(value, 1) < 1000 or unit == "PB":
            return f"{value:.1f} {unit}"
    raise AssertionError("unreachable")
