"""A synthetic LMS lake (CONTRACT section 2) for tests, demos and benchmarks.

Everything the LMS would write: the user directory, courses with rosters, student
workspaces and the hive-partitioned access log, full of the awkward data real users
produce (Unicode, quotes, newlines, formula-like names, duplicate and path-hostile
assignment names, odd file names). Output is a pure function of the spec, the seed and
``now``: every random draw comes from numpy generators seeded per stream, so the same
call writes the same bytes.

The log is generated one day at a time with vectorised numpy and written with pyarrow,
so memory stays bounded by one day however many events there are. The same events can
be laid out in several ways (:class:`LogLayout`): the engine must give the same CSV on
each.

Not part of the runtime package: it needs numpy, a development dependency.

    python -m sample_lake --url ./var/lake --seed 1 --courses 3
"""

from sample_lake.generate import generate_lake
from sample_lake.spec import LakeSpec, LakeSummary, LogLayout, issue_lake_spec, tiny_lake_spec

__all__ = [
    "LakeSpec",
    "LakeSummary",
    "LogLayout",
    "generate_lake",
    "issue_lake_spec",
    "tiny_lake_spec",
]
