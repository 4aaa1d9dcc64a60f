"""CSV cells: people, assignments, times and labels rendered once, as Polars expressions."""

from __future__ import annotations

import polars as pl

from course_exports.access_log.schema import ACCESS_TYPE_LABELS
from course_exports.tabular import spreadsheet_cell

CSV_HEADER = (
    "Username,Email,First Name,Last Name,Date/Time,Access Type,Assignment,Role,"
    "Project Path,IP Address"
)
UTF8_BOM = b"\xef\xbb\xbf"

# ISO 8601 with the offset as +hh:mm; %S alone truncates the fraction of a second.
_ISO_SECONDS = "%Y-%m-%dT%H:%M:%S%:z"

# ---------------------------------------------------------------------------- rendering


_USER_CELLS = ("username", "email", "first_name", "last_name")
_SESSION_TYPES = ("login", "logout")


class People:
    """CSV cells of every user met so far: the four directory cells and the roster role.

    Seeded with the roster; a batch that meets users outside it (people who left the
    course) looks only those up in the directory, once, so the directory (possibly the
    whole platform) is scanned a handful of times per export, not once per row or batch.
    """

    def __init__(self, users: pl.DataFrame, roster: pl.DataFrame) -> None:
        self._users = users.select(
            pl.col("user_id").cast(pl.Int64), *(pl.col(c).cast(pl.String) for c in _USER_CELLS)
        )
        self._roles = roster.select(
            pl.col("user_id").cast(pl.Int64),
            spreadsheet_cell(pl.col("role").cast(pl.String)).alias("role"),
        ).unique("user_id", keep="first", maintain_order=True)
        self.cells = self._lookup(self._roles.select("user_id"))

    def _lookup(self, ids: pl.DataFrame) -> pl.DataFrame:
        found = self._users.join(ids, on="user_id", how="semi").unique(
            "user_id", keep="first", maintain_order=True
        )
        # Ids missing from the directory stay as rows of nulls, so they are not looked up
        # again in the next batch.
        return (
            ids.join(found, on="user_id", how="left")
            .join(self._roles, on="user_id", how="left")
            .select("user_id", *(spreadsheet_cell(pl.col(c)).alias(c) for c in _USER_CELLS), "role")
        )

    def for_batch(self, events: pl.DataFrame) -> pl.DataFrame:
        ids = events.select(pl.col("user_id").unique().drop_nulls())
        new = ids.join(self.cells, on="user_id", how="anti")
        if new.height:
            self.cells = pl.concat([self.cells, self._lookup(new)])
        return self.cells


def assignment_cells(assignments: pl.DataFrame) -> pl.DataFrame:
    return assignments.select(
        pl.col("assignment_id").cast(pl.Int64),
        spreadsheet_cell(pl.col("label").cast(pl.String)).alias("assignment"),
    ).unique("assignment_id", keep="first", maintain_order=True)


def render(events: pl.DataFrame, timezone: str) -> pl.DataFrame:
    """The CSV columns, in order, for sorted events already joined with their cells."""
    local = pl.col("event_time")
    if timezone != "UTC":
        local = local.dt.convert_time_zone(timezone)
    return events.select(
        pl.col("username"),
        pl.col("email"),
        pl.col("first_name"),
        pl.col("last_name"),
        local.dt.strftime(_ISO_SECONDS).alias("date_time"),
        pl.col("access_type").replace_strict(ACCESS_TYPE_LABELS, return_dtype=pl.String),
        # Login and logout name no assignment (CONTRACT 4.2), whatever the row says.
        pl.when(pl.col("access_type").is_in(_SESSION_TYPES))
        .then(pl.lit(None, dtype=pl.String))
        .otherwise(pl.col("assignment"))
        .alias("assignment"),
        pl.col("role"),
        spreadsheet_cell(pl.col("project_path")).alias("project_path"),
        spreadsheet_cell(pl.col("ip")).alias("ip"),
    )
