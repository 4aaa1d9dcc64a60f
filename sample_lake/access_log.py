"""The day-partitioned access log, in the layout the spec asks for."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

import numpy as np
import pyarrow as pa

from course_exports.access_log import ACCESS_LOG_SCHEMA
from course_exports.storage import Location
from sample_lake.names import PROJECT_PATHS
from sample_lake.people import People, SampleCourse, zipf_weights
from sample_lake.spec import (
    COURSE_SORTED_ROW_GROUP,
    STREAM_LOG,
    BoolArray,
    FloatArray,
    IntArray,
    LakeSpec,
    LogLayout,
    rng_for,
)
from sample_lake.tables import write_parquet

ACCESS_TYPES = ("login", "logout", "project_open", "project_close")
LOGIN, LOGOUT, PROJECT_OPEN, PROJECT_CLOSE = range(4)
LOGIN, LOGOUT, PROJECT_OPEN, PROJECT_CLOSE = range(4)
OUTSIDER_SESSION_P = 0.002  # sessions by users who were never in any roster
GHOST_ASSIGNMENT_P = 0.002  # project opens of an assignment deleted from course.json
MEAN_PROJECTS_PER_SESSION = 2.0
LOGOUT_P = 0.93  # the rest time out without a logout event
MEAN_EVENT_GAP_S = 8 * 60
SECOND_IP_P = 0.2
IPV6_P = 0.3
WEEKEND_WEIGHT = 0.45
DAY_US = 86_400 * 1_000_000

# --------------------------------------------------------------------------- access log


class _SegmentSampler:
    """Weighted draws of one item per request from the request's own segment (course).

    All segments share one flat CDF in which segment ``s`` spans ``[s, s + 1]``, so a
    single ``searchsorted`` serves a whole day of sessions across every course.
    """

    def __init__(self, segments: Sequence[FloatArray]) -> None:
        lengths = np.array([len(w) for w in segments], dtype=np.int64)
        if (lengths == 0).any():
            raise ValueError("every segment needs at least one item")
        self.ends = np.cumsum(lengths)
        parts = []
        for s, weights in enumerate(segments):
            cdf = np.cumsum(weights) / weights.sum()
            cdf[-1] = 1.0
            parts.append(s + cdf)
        self.cdf = np.concatenate(parts)

    def sample(self, rng: np.random.Generator, segment: IntArray) -> IntArray:
        u = rng.random(len(segment))
        idx = np.searchsorted(self.cdf, segment + u, side="right").astype(np.int64)
        # s + u can round up to s + 1 for u near 1: stay inside the segment.
        return np.minimum(idx, self.ends[segment] - 1)


@dataclass(frozen=True)
class _LogModel:
    course_ids: IntArray
    course_p: FloatArray
    members: _SegmentSampler  # everyone who ever was in the course (left users too)
    current: _SegmentSampler  # current roster only
    member_user: IntArray  # flat member index -> user index (per sampler, same layout)
    member_leave_day: IntArray  # day index after which the member has no sessions
    current_user: IntArray
    outsiders: IntArray
    assignment_start: IntArray
    assignment_count: IntArray
    assignment_ids: IntArray
    deleted_ids: IntArray  # one per course
    user_ids: IntArray
    ip_pool: pa.Array  # two addresses per user: 2u and 2u + 1
    path_pool: pa.Array
    type_pool: pa.Array


def _ip_pool(rng: np.random.Generator, n_users: int) -> pa.Array:
    n = 2 * n_users
    is_v6 = rng.random(n) < IPV6_P
    v4 = rng.integers(1, 255, (n, 4))
    v6_words = rng.integers(0, 65536, (n, 4))
    addresses = []
    for i in range(n):
        if is_v6[i]:
            # Documentation prefix with a sparse host part, so compressed forms (::) occur.
            w = v6_words[i]
            value = (0x20010DB8 << 96) | (int(w[0]) << 64) | (int(w[1]) << 16) | int(w[2])
            addresses.append(str(ipaddress.IPv6Address(value)))
        else:
            a, b, c, d = (int(x) for x in v4[i])
            addresses.append(f"{a}.{b}.{c}.{d}")
    return pa.array(addresses, pa.string())


def build_log_model(
    spec: LakeSpec, courses: list[SampleCourse], people: People, outsiders: list[int]
) -> _LogModel:
    rng = rng_for(spec, STREAM_LOG, 0)
    n_users = len(people.user_ids)
    # Some users are far busier than others; teachers log in less than students.
    activity = rng.lognormal(0.0, 1.0, n_users)
    member_weights, current_weights = [], []
    member_user, member_leave, current_user = [], [], []
    for course in courses:
        current = course.teachers + course.students
        everyone = current + course.left
        teacher_damp = np.ones(len(current))
        teacher_damp[: len(course.teachers)] = 0.5
        current_weights.append(activity[current] * teacher_damp)
        member_weights.append(
            activity[everyone] * np.append(teacher_damp, np.ones(len(course.left)))
        )
        current_user.append(current)
        member_user.append(everyone)
        # Students leave somewhere in the middle of the log, so their events are old
        # but some stay inside a 6-month retention window.
        earliest = int(spec.days * 0.3)
        leave = rng.integers(earliest, max(int(spec.days * 0.9), earliest + 1), len(course.left))
        member_leave.append(np.concatenate([np.full(len(current), spec.days), leave]))
    counts = np.array([len(c.assignment_ids) for c in courses], dtype=np.int64)
    return _LogModel(
        course_ids=np.array([c.course_id for c in courses], dtype=np.int64),
        course_p=zipf_weights(len(courses), spec.event_skew),
        members=_SegmentSampler(member_weights),
        current=_SegmentSampler(current_weights),
        member_user=np.concatenate([np.array(u, dtype=np.int64) for u in member_user]),
        member_leave_day=np.concatenate(member_leave).astype(np.int64),
        current_user=np.concatenate([np.array(u, dtype=np.int64) for u in current_user]),
        outsiders=np.array(outsiders, dtype=np.int64),
        assignment_start=np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64),
        assignment_count=counts,
        assignment_ids=np.array([a for c in courses for a in c.assignment_ids], dtype=np.int64),
        deleted_ids=np.array([c.deleted_assignment_ids[0] for c in courses], dtype=np.int64),
        user_ids=people.user_ids,
        ip_pool=_ip_pool(rng, n_users),
        path_pool=pa.array(PROJECT_PATHS, pa.string()),
        type_pool=pa.array(ACCESS_TYPES, pa.string()),
    )


def _session_lengths(rng: np.random.Generator, n_events: int) -> tuple[IntArray, BoolArray]:
    """Events per session (login, open/close pairs, logout) summing to exactly n_events."""
    mean_len = 2 + 2 * MEAN_PROJECTS_PER_SESSION
    lengths_parts: list[IntArray] = []
    logout_parts: list[BoolArray] = []
    total = 0
    while total < n_events:
        n = int((n_events - total) / mean_len * 1.2) + 16
        pairs = rng.geometric(1 / (1 + MEAN_PROJECTS_PER_SESSION), n).astype(np.int64) - 1
        has_logout = rng.random(n) < LOGOUT_P
        lengths_parts.append(1 + 2 * pairs + has_logout)
        logout_parts.append(has_logout)
        total += int(lengths_parts[-1].sum())
    lengths = np.concatenate(lengths_parts)
    has_logout = np.concatenate(logout_parts)
    ends = np.cumsum(lengths)
    n_sessions = int(np.searchsorted(ends, n_events)) + 1
    lengths, has_logout = lengths[:n_sessions].copy(), has_logout[:n_sessions].copy()
    excess = int(ends[n_sessions - 1]) - n_events
    if excess:
        # The log was cut mid-session (the day's quota): that session has no logout yet.
        lengths[-1] -= excess
        has_logout[-1] = False
    return lengths, has_logout


def _day_table(
    rng: np.random.Generator,
    model: _LogModel,
    day_index: int,
    day_start_us: int,
    span_us: int,
    n_events: int,
) -> tuple[pa.Table, IntArray]:
    """One day's events, in session order (not time order), and events per course."""
    lengths, has_logout = _session_lengths(rng, n_events)
    n_sessions = len(lengths)
    course = rng.choice(len(model.course_ids), n_sessions, p=model.course_p).astype(np.int64)

    member = model.members.sample(rng, course)
    user = model.member_user[member]
    gone = model.member_leave_day[member] < day_index
    if gone.any():
        user[gone] = model.current_user[model.current.sample(rng, course[gone])]
    if len(model.outsiders):
        stranger = rng.random(n_sessions) < OUTSIDER_SESSION_P
        user[stranger] = model.outsiders[rng.integers(0, len(model.outsiders), int(stranger.sum()))]
    ip_index = 2 * user + (rng.random(n_sessions) < SECOND_IP_P)

    # Expand sessions to events: position 0 is the login, then open/close pairs.
    first = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
    session = np.repeat(np.arange(n_sessions, dtype=np.int64), lengths)
    pos = np.arange(n_events, dtype=np.int64) - first[session]
    is_logout = has_logout[session] & (pos == lengths[session] - 1)
    kind = np.where(pos % 2 == 1, PROJECT_OPEN, PROJECT_CLOSE)
    kind = np.where(is_logout, LOGOUT, kind)
    kind[pos == 0] = LOGIN
    is_project = (kind == PROJECT_OPEN) | (kind == PROJECT_CLOSE)

    # A close refers to the project its open did: draw per event, copy the open's draw.
    ev_course = course[session]
    pick = rng.random(n_events)
    path_pick = rng.integers(0, len(PROJECT_PATHS), n_events)
    ghost = rng.random(n_events) < GHOST_ASSIGNMENT_P
    opener = np.arange(n_events) - (kind == PROJECT_CLOSE)
    pick, path_pick, ghost = pick[opener], path_pick[opener], ghost[opener]
    if len(model.assignment_ids):
        start, count = model.assignment_start[ev_course], model.assignment_count[ev_course]
        slot = np.minimum(start + (pick * count).astype(np.int64), start + count - 1)
        assignment = np.where(ghost, model.deleted_ids[ev_course], model.assignment_ids[slot])
    else:
        assignment = model.deleted_ids[ev_course]

    times = _event_times(rng, lengths, first, session, pos, day_start_us, span_us)
    no_project = ~is_project
    table = pa.Table.from_arrays(
        [
            pa.array(times, pa.timestamp("us", tz="UTC")),
            pa.array(model.user_ids[user[session]], pa.int64()),
            pa.array(model.course_ids[ev_course], pa.int64()),
            pa.array(assignment, pa.int64(), mask=no_project),
            model.type_pool.take(pa.array(kind)),
            model.path_pool.take(pa.array(path_pick, mask=no_project)),
            model.ip_pool.take(pa.array(ip_index[session])),
        ],
        schema=ACCESS_LOG_SCHEMA,
    )
    per_course = np.bincount(ev_course, minlength=len(model.course_ids)).astype(np.int64)
    return table, per_course


def _event_times(
    rng: np.random.Generator,
    lengths: IntArray,
    first: IntArray,
    session: IntArray,
    pos: IntArray,
    day_start_us: int,
    span_us: int,
) -> IntArray:
    """Microsecond timestamps: sessions placed inside [day_start, day_start + span)."""
    gaps = rng.exponential(MEAN_EVENT_GAP_S * 1_000_000, len(session)).astype(np.int64)
    gaps[pos == 0] = 0
    elapsed = np.cumsum(gaps)
    elapsed -= elapsed[first][session]
    duration = elapsed[first + lengths - 1]
    # A session never crosses midnight (or `now`): squeeze the rare long ones.
    squeeze = np.minimum(1.0, (span_us - 1) / np.maximum(duration, 1))
    elapsed = (elapsed * squeeze[session]).astype(np.int64)
    duration = (duration * squeeze).astype(np.int64)
    room = span_us - duration  # >= 1
    start = np.minimum((rng.random(len(lengths)) * room).astype(np.int64), room - 1)
    return day_start_us + start[session] + elapsed


def _day_weights(first_day: date, days: int, last_day_fraction: float) -> FloatArray:
    weekday = np.array([(first_day + timedelta(d)).weekday() for d in range(days)])
    weights = np.where(weekday >= 5, WEEKEND_WEIGHT, 1.0)
    # Usage grows slowly over the term.
    weights = weights * np.linspace(0.8, 1.2, days)
    # The last day is only partly over; give it at least an hour's share.
    weights[-1] *= max(last_day_fraction, 1 / 24)
    return weights / weights.sum()


def _epoch_us(moment: datetime) -> int:
    delta = moment - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def write_access_log(
    lake: Location, spec: LakeSpec, model: _LogModel, now: datetime
) -> tuple[IntArray, int]:
    rng = rng_for(spec, STREAM_LOG, 1)
    shuffle_rng = rng_for(spec, STREAM_LOG, 2)
    last_day = now.date()
    first_day = last_day - timedelta(days=spec.days - 1)
    now_us = _epoch_us(now)
    last_start_us = _epoch_us(datetime(last_day.year, last_day.month, last_day.day, tzinfo=UTC))
    fraction = (now_us - last_start_us) / DAY_US
    per_day = rng.multinomial(spec.events, _day_weights(first_day, spec.days, fraction))
    per_course = np.zeros(len(model.course_ids), dtype=np.int64)
    written_days = 0
    for d, n_events in enumerate(per_day.tolist()):
        if n_events == 0:
            continue
        day = first_day + timedelta(days=d)
        day_start_us = last_start_us - (spec.days - 1 - d) * DAY_US
        # On today's partition nothing happens after `now`.
        span_us = DAY_US if day != last_day else min(DAY_US, now_us - last_start_us + 1)
        table, counts = _day_table(rng, model, d, day_start_us, span_us, n_events)
        per_course += counts
        folder = lake.path("access_log", f"event_date={day.isoformat()}")
        for name, chunk, row_group in _day_files(spec, table, day_start_us, shuffle_rng):
            write_parquet(lake, chunk, f"{folder}/{name}", row_group_size=row_group)
        written_days += 1
    return per_course, written_days


def _day_files(
    spec: LakeSpec, table: pa.Table, day_start_us: int, shuffle_rng: np.random.Generator
) -> Iterator[tuple[str, pa.Table, int | None]]:
    """(file name, rows, row-group size or None for pyarrow's) of one day, per layout.

    Every layout holds the same rows; only files, order and row groups differ. The
    shuffle draws from its own stream, so the events stay those of the other layouts.
    """
    n_events = len(table)
    if spec.layout is LogLayout.PARTS:
        parts = min(spec.files_per_day, n_events)
        bounds = np.linspace(0, n_events, parts + 1).astype(np.int64)
        for k in range(parts):
            yield (
                f"part-{k}.parquet",
                table.slice(int(bounds[k]), int(bounds[k + 1] - bounds[k])),
                None,
            )
    elif spec.layout is LogLayout.DAILY_UNSORTED:
        order = shuffle_rng.permutation(n_events)
        yield "part-0.parquet", table.take(pa.array(order)), n_events
    elif spec.layout is LogLayout.HOURLY:
        times = table["event_time"].cast(pa.int64()).to_numpy()
        hours = (times - day_start_us) // (3_600 * 1_000_000)
        for hour in np.unique(hours).tolist():
            rows = np.flatnonzero(hours == hour)
            yield f"hour-{hour:02d}.parquet", table.take(pa.array(rows)), None
    else:
        keys = [("course_id", "ascending"), ("event_time", "ascending")]
        yield "part-0.parquet", table.sort_by(keys), COURSE_SORTED_ROW_GROUP
