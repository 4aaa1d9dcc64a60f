"""What the page needs from the lake (course, roster, names), read through a short cache:
a page refreshing every few seconds must not re-read the directory each time, and a
teacher removed from the roster loses access within the cache's lifetime."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import polars as pl

from course_exports import lake
from course_exports.lake import Course
from course_exports.storage import Location

T = TypeVar("T")
CACHE_SECONDS = 30.0


@dataclass(frozen=True)
class Member:
    user_id: int
    name: str


class CourseFacts:
    def __init__(self, lake_location: Location, ttl_s: float = CACHE_SECONDS) -> None:
        self.lake = lake_location
        self.ttl_s = ttl_s
        self._cache: dict[tuple[str, int], tuple[float, Any]] = {}
        self._lock = threading.Lock()

    def _cached(self, what: str, course_id: int, load: Callable[[], T]) -> T:
        now = time.monotonic()
        with self._lock:
            hit = self._cache.get((what, course_id))
        if hit and now - hit[0] < self.ttl_s:
            value: T = hit[1]
            return value
        value = load()
        with self._lock:
            self._cache[(what, course_id)] = (now, value)
        return value

    def course(self, course_id: int) -> Course:
        """NotFoundError when the lake has no such course."""
        return self._cached("course", course_id, lambda: lake.read_course(self.lake, course_id))

    def role(self, course_id: int, user_id: int) -> str | None:
        """The user's role in the course; NotFoundError when the course does not exist."""
        self.course(course_id)
        roster = self._cached("roster", course_id, lambda: lake.read_roster(self.lake, course_id))
        found = roster.filter(pl.col("user_id") == user_id)["role"]
        return str(found[0]) if found.len() else None

    def _names(self) -> dict[int, str]:
        def load() -> dict[int, str]:
            users = lake.read_users(self.lake)
            full = pl.concat_str(
                [pl.col("first_name").fill_null(""), pl.col("last_name").fill_null("")],
                separator=" ",
            ).str.strip_chars()
            frame = users.select(
                "user_id",
                pl.when(full == "").then(pl.col("username")).otherwise(full).alias("name"),
            )
            return dict(zip(frame["user_id"].to_list(), frame["name"].to_list(), strict=True))

        return self._cached("names", 0, load)

    def name(self, user_id: int) -> str:
        return self._names().get(user_id) or f"user {user_id}"

    def students(self, course_id: int) -> list[Member]:
        roster = self._cached("roster", course_id, lambda: lake.read_roster(self.lake, course_id))
        ids = roster.filter(pl.col("role") == "Student")["user_id"].to_list()
        members = [Member(uid, self.name(uid)) for uid in ids]
        return sorted(members, key=lambda m: (m.name.casefold(), m.user_id))
