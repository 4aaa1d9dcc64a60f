"""Retention: expired exports and leftovers under the exports root, old access events.

Both purges are *survey -> decide -> apply*: one listing, a pure decision a person can
read (and a dry run can report), then deletions that re-check what they delete, because
exports keep running while a purge does.

Exports root (CONTRACT 4), what :func:`decide_export_purge` does with each thing:

* ``<course>/<export>/`` with a ``ready`` manifest past ``expires_at``: the files go, the
  manifest stays as an ``expired`` tombstone with ``purged_at`` (links answer 410, the
  LMS sees what happened). Before ``expires_at`` nothing of it is ever deleted.
* an ``expired`` tombstone :data:`TOMBSTONE_DAYS` after it was purged: removed. Links
  still answer 410 after that, because every token carries its own expiry.
* a ``failed`` tombstone (a run that gave up: its manifest says why) once its
  ``expires_at`` has passed: removed.
* a ``pending`` manifest, or files without a manifest, with no sign of life for
  :data:`STALE_AFTER` (created_at, file times, S3 uploads): a run that died; removed.
  A day is well over the longest an export can write (6 h pack task, retried twice).
* ``.<name>.<hex>.tmp`` files of atomic writes older than :data:`STALE_AFTER`: removed.
* S3 multipart uploads under an export or project folder, started over
  :data:`STALE_AFTER` ago: aborted (their parts cost money and are invisible).
* ``projects/<id>/`` (import-project) lives as long as the export it came from, but at
  least the TTL after the import, so a reviewer gets a full TTL whatever the export's
  age: removed once its export is not live (expired, tombstone or gone) *and*
  ``imported_at + TTL`` has passed. A project folder without ``project.json`` is an
  import that died and goes after :data:`STALE_AFTER`.
* Anything else (names that are not ``<course id>/<32 hex>/`` or ``projects/<32 hex>/``,
  unreadable manifests): never touched; unreadable manifests are reported.

Access log (CONTRACT 2): whole day partitions past the retention, with their days of
our course-clustered copy (``retention.access_log``).

Modules: ``survey`` (what is under the exports root), ``steps`` (what to delete, made
by one builder), ``exports`` (the exports purge's decision and summary), ``deletions``
(carrying steps out), ``access_log`` (the access-log purge).
"""

from course_exports.retention.access_log import (
    AccessPurgePlan,
    AccessPurgeSummary,
    PartitionDrop,
    drop_partition,
    plan_access_purge,
    summarise_access_purge,
)
from course_exports.retention.deletions import apply_steps
from course_exports.retention.exports import (
    LIST_CAP,
    STALE_AFTER,
    TOMBSTONE_DAYS,
    ExportPurgePlan,
    ExportPurgeSummary,
    decide_export_purge,
    summarise_export_purge,
)
from course_exports.retention.steps import ProjectStamp, PurgeStep, StepKind, StoredFile
from course_exports.retention.survey import (
    ExportFolder,
    ExportsSurvey,
    PendingUpload,
    ProjectFolder,
    list_uploads,
    survey_exports,
)

__all__ = [
    "LIST_CAP",
    "STALE_AFTER",
    "TOMBSTONE_DAYS",
    "AccessPurgePlan",
    "AccessPurgeSummary",
    "ExportFolder",
    "ExportPurgePlan",
    "ExportPurgeSummary",
    "ExportsSurvey",
    "PartitionDrop",
    "PendingUpload",
    "ProjectFolder",
    "ProjectStamp",
    "PurgeStep",
    "StepKind",
    "StoredFile",
    "apply_steps",
    "decide_export_purge",
    "drop_partition",
    "list_uploads",
    "plan_access_purge",
    "summarise_access_purge",
    "summarise_export_purge",
    "survey_exports",
]
