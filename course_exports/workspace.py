"""Student workspaces: find them with one listing and name them safely inside the zip.

Folder and file names inside an export must open on every OS: no ``..``, no absolute
paths, none of the characters or device names Windows rejects, and no two entries that
differ only by case (Windows and macOS would merge them). Names are made readable
(assignment name, username) and unique once, here; the manifest keeps each file's
original path so an import can restore it exactly.
"""

from __future__ import annotations

import posixpath
import re
import unicodedata
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from json.encoder import encode_basestring as _json_string  # C; ensure_ascii=False's
from typing import NamedTuple

import polars as pl

from course_exports.errors import InputError, LakeDataError
from course_exports.lake import Course, check_assignment_ids
from course_exports.spill import Span, Spill
from course_exports.storage import Location
from course_exports.text import strip_bidi

# Windows' forbidden characters, C0 and C1 controls, the Unicode line separators, and lone
# surrogates (how Python spells the bytes of a local file name that is not UTF-8).
_FORBIDDEN = re.compile(r'[<>:"/\\|?*\x00-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]')
# Device names Windows reserves whatever the extension (superscript digits count too).
_RESERVED = {"CON", "PRN", "AUX", "NUL"} | {
    f"{d}{i}" for d in ("COM", "LPT") for i in "123456789\u00b9\u00b2\u00b3"
}
_UNDECODABLE = re.compile(r"[\ud800-\udfff]")
MAX_NAME = 120  # bytes per path component, well under every filesystem's 255
# Names that every rule below leaves as they are (ASCII letters, digits, ``._-``, not
# starting with a dot or ending with one): most file names, so they skip the Unicode work.
_PLAIN = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]*(?<!\.)")


def _fit(text: str, limit: int) -> str:
    """``text`` cut to at most ``limit`` UTF-8 bytes on a character boundary, NFC, and
    without the trailing dots and spaces Windows drops."""
    while True:
        encoded = text.encode()
        if len(encoded) > limit:
            text = encoded[:limit].decode(errors="ignore")
        text = unicodedata.normalize("NFC", text).rstrip(". ")
        if len(text.encode()) <= limit:
            return text


def safe_name(name: str, fallback: str = "_", *, limit: int = MAX_NAME) -> str:
    """One path component that every common filesystem accepts, readable as the original.

    Bidirectional controls are dropped (``cod\u202egpj.exe`` would show as
    ``codexe.jpg``), other controls and forbidden characters become ``_``.
    """
    # A shortcut (a file name per file adds up): the rules keep plain names as they are.
    plain = len(name) <= limit and _PLAIN.fullmatch(name)
    text = name if plain else _cleaned(name, fallback, limit)
    if text.split(".")[0].upper() in _RESERVED:
        text = _fit(f"_{text}", limit)
    return text


def _cleaned(name: str, fallback: str, limit: int) -> str:
    text = _FORBIDDEN.sub("_", unicodedata.normalize("NFC", strip_bidi(name)))
    text = _fit(text.strip(" "), limit)
    return fallback if text in ("", ".", "..") else text


class UniqueNames:
    """Hands out names unique under case folding, suffixing `` (2)``, `` (3)``... on clashes,
    cutting the name (never the suffix or extension) to stay within :data:`MAX_NAME`."""

    def __init__(self) -> None:
        self._taken: set[str] = set()

    def claim(self, wanted: str, *, suffix: str | None = None) -> str:
        folded = wanted.casefold()
        if folded not in self._taken:  # the usual case: no clash, nothing to compute
            self._taken.add(folded)
            return wanted
        candidate = wanted
        if suffix is not None:
            candidate = _with_tail(wanted, f" ({suffix})")
        stem, ext = _split_ext(candidate)
        n = 2
        while candidate.casefold() in self._taken:
            candidate = _with_tail(stem, f" ({n}){ext}")
            n += 1
        self._taken.add(candidate.casefold())
        return candidate


def _with_tail(stem: str, tail: str) -> str:
    room = MAX_NAME - len(tail.encode())
    return _fit(stem, room) + tail if len(stem.encode()) > room else stem + tail


def _split_ext(name: str) -> tuple[str, str]:
    stem, ext = posixpath.splitext(name)
    return (stem, ext) if stem and len(ext) <= 10 else (name, "")


class WorkspaceFile(NamedTuple):
    """One file of one workspace, where it comes from and where it goes in the zip."""

    assignment_id: int
    user_id: int
    source: str  # path relative to the workspace root, as the LMS wrote it
    path: str  # filesystem path in the lake
    size: int
    arcname: str  # path relative to the zip's ``workspaces/`` folder


@dataclass(frozen=True)
class Workspace:
    assignment_id: int
    user_id: int
    username: str | None  # from the user directory; None when it does not know the user
    folder: str  # "<assignment folder>/<student folder>"
    role: str  # roster role, or "" when the user left the course
    files: int
    bytes: int


@dataclass
class WorkspacePlan:
    """The selected workspaces, in zip order; their files are spilled to disk (a course
    may hold hundreds of thousands) and named as :meth:`files` reads them back."""

    workspaces: list[Workspace] = field(default_factory=list)
    assignment_folders: dict[int, str] = field(default_factory=dict)
    listing: Spill | None = None  # ``[source, path, size]`` per file
    spans: dict[tuple[int, int], list[Span]] = field(default_factory=dict)  # per workspace

    @property
    def file_count(self) -> int:
        return sum(w.files for w in self.workspaces)

    @property
    def total_bytes(self) -> int:
        return sum(w.bytes for w in self.workspaces)

    def files(self) -> Iterator[WorkspaceFile]:
        """Every file, workspace by workspace, sorted and named; one workspace in memory."""
        for workspace in self.workspaces:
            key = (workspace.assignment_id, workspace.user_id)
            assert self.listing is not None
            rows: list[tuple[str, str, int]] = []
            for span in self.spans[key]:
                rows.extend(map(tuple, self.listing.read(span)))
            rows.sort()
            names = _file_names([source for source, _, _ in rows])
            for (source, path, size), name in zip(rows, names, strict=True):
                yield WorkspaceFile(*key, source, path, size, f"{workspace.folder}/{name}")


def check_selection(
    course: Course,
    roster: pl.DataFrame,
    assignment_ids: Sequence[int] | None,
    student_ids: Sequence[int] | None,
) -> None:
    """Refuse ids that are not part of the course, before anything is written."""
    check_assignment_ids(course, assignment_ids)
    if student_ids is not None:
        students = set(roster.filter(pl.col("role") == "Student")["user_id"].to_list())
        unknown = sorted(set(student_ids) - students)
        if unknown:
            raise InputError(
                "student_ids",
                f"{', '.join(map(str, unknown))} not a Student of course "
                f"{course.id} ({course.name})",
            )


def assignment_folders(course: Course, selected: Iterable[int] | None = None) -> dict[int, str]:
    """Readable, unique folder names for the (selected) assignments, in course order."""
    chosen = None if selected is None else set(selected)
    names = UniqueNames()
    return {
        a.id: names.claim(safe_name(a.name, f"assignment {a.id}"), suffix=str(a.id))
        for _, a in course.assignments()
        if chosen is None or a.id in chosen
    }


def list_workspace_files(
    lake: Location, course_id: int
) -> Iterable[tuple[int, int, str, str, int]]:
    """``(assignment_id, user_id, path in the workspace, path in the lake, size)`` for
    every workspace file, streamed.

    One recursive listing of the course's prefix (a request per 1,000 objects on S3),
    not one per workspace: on S3 that is the difference between one request per 1,000
    files and one per student.
    """
    root = f"workspaces/{course_id}/"
    for path, size in lake.iter_sizes("workspaces", course_id):
        parts = path.removeprefix(root).split("/", 2)
        if len(parts) < 3:
            raise LakeDataError(lake.url_for(path), "a file outside any workspace folder")
        try:
            assignment_id, user_id = int(parts[0]), int(parts[1])
        except ValueError:
            raise LakeDataError(
                lake.url_for(path), "workspace folders must be <assignment_id>/<user_id>"
            ) from None
        if _UNDECODABLE.search(parts[2]):
            # A local file whose name is not UTF-8: no zip name or manifest can hold it.
            raise LakeDataError(lake.url_for(path), "a file name that is not valid UTF-8")
        yield assignment_id, user_id, parts[2], path, size


def listing_line(rel: str, path: str, size: int) -> bytes:
    """``json.dumps([rel, path, size], ensure_ascii=False)``, formatted directly: a line
    per file of the listing adds up (100,000 files: a third of the plan's time)."""
    return f"[{_json_string(rel)}, {_json_string(path)}, {size}]".encode()


def plan_workspaces(
    listing: Iterable[tuple[int, int, str, str, int]],
    course: Course,
    roster: pl.DataFrame,
    users: pl.DataFrame,
    *,
    assignment_ids: Sequence[int] | None = None,
    student_ids: Sequence[int] | None = None,
) -> WorkspacePlan:
    """Choose, order and name the files of the selected workspaces.

    Workspaces of assignments no longer in ``course.json`` are not exported (their
    assignment has no name or stack to restore them under). Users who left the course
    keep their workspaces in a full export; a ``student_ids`` selection takes only those.
    """
    folders = assignment_folders(course, assignment_ids)
    chosen_students = None if student_ids is None else set(student_ids)
    spill = Spill()
    spans: dict[tuple[int, int], list[Span]] = {}
    sizes: dict[tuple[int, int], list[int]] = {}  # files, bytes
    for assignment_id, user_id, rel, path, size in listing:
        if assignment_id not in folders:
            continue
        if chosen_students is not None and user_id not in chosen_students:
            continue
        key = (assignment_id, user_id)
        start, end = spill.append_line(listing_line(rel, path, size))
        runs = spans.setdefault(key, [])
        if runs and runs[-1][1] == start:  # listings give a workspace's files together
            runs[-1] = (runs[-1][0], end)
        else:
            runs.append((start, end))
        counted = sizes.setdefault(key, [0, 0])
        counted[0] += 1
        counted[1] += size

    usernames = dict(
        users.filter(pl.col("user_id").is_in([u for _, u in spans]))
        .select("user_id", "username")
        .iter_rows()
    )
    roles = dict(roster.select("user_id", "role").iter_rows())
    order = {aid: i for i, aid in enumerate(folders)}
    plan = WorkspacePlan(assignment_folders=folders, listing=spill, spans=spans)
    student_names: dict[int, UniqueNames] = {aid: UniqueNames() for aid in folders}
    for assignment_id, user_id in sorted(
        spans, key=lambda k: (order[k[0]], str(usernames.get(k[1]) or ""), k[1])
    ):
        username = usernames.get(user_id)
        folder = student_names[assignment_id].claim(
            safe_name(username or f"user {user_id}", f"user {user_id}"), suffix=str(user_id)
        )
        files, size = sizes[(assignment_id, user_id)]
        plan.workspaces.append(
            Workspace(
                assignment_id,
                user_id,
                username,
                f"{folders[assignment_id]}/{folder}",
                roles.get(user_id, ""),
                files,
                size,
            )
        )
    return plan


def _file_names(sources: Sequence[str]) -> list[str]:
    """Safe relative names for one workspace's files, unique per folder under case folding."""
    dirs: dict[str, UniqueNames] = {}
    mapped_dirs: dict[str, str] = {"": ""}
    out = []
    for source in sources:
        *parents, leaf = source.split("/")
        parent_src = ""
        for part in parents:
            child_src = f"{parent_src}/{part}" if parent_src else part
            if child_src not in mapped_dirs:
                taken = dirs.setdefault(mapped_dirs[parent_src], UniqueNames())
                name = taken.claim(safe_name(part))
                mapped_dirs[child_src] = f"{mapped_dirs[parent_src]}/{name}".lstrip("/")
            parent_src = child_src
        target_dir = mapped_dirs[parent_src]
        leaf_name = dirs.setdefault(target_dir, UniqueNames()).claim(safe_name(leaf))
        out.append(f"{target_dir}/{leaf_name}".lstrip("/"))
    return out
