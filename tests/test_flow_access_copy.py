"""export-access-data and refresh-access-log-copy through Prefect, on every lake layout:
the CSV is the plain-Python reference's, with and without the course-clustered copy."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from pathlib import Path

import pytest
from flowkit import LocalSite, make_site
from reference import lake_reference_csv

from course_exports.access_log import AccessWindow
from course_exports.access_log.partitions import list_day_partitions
from course_exports.storage import open_location
from flows.access_copy import refresh_access_log_copy
from flows.export_access_data import export_access_data
from sample_lake import LakeSummary, LogLayout, generate_lake, tiny_lake_spec

pytestmark = [pytest.mark.flow, pytest.mark.usefixtures("prefect_harness")]


@pytest.fixture(scope="module")
def pristine_layouts(
    tmp_path_factory: pytest.TempPathFactory,
) -> dict[LogLayout, tuple[Path, LakeSummary]]:
    made = {}
    for layout in LogLayout:
        root = tmp_path_factory.mktemp(f"pristine-{layout}")
        spec = dataclasses.replace(tiny_lake_spec(), layout=layout, workspaces=False)
        made[layout] = (root, generate_lake(open_location(str(root)), spec, now=datetime.now(UTC)))
    return made


@pytest.mark.parametrize("with_copy", [False, True], ids=["source", "copy"])
@pytest.mark.parametrize("layout", list(LogLayout))
def test_export_matches_the_reference_on_every_layout(
    pristine_layouts: dict[LogLayout, tuple[Path, LakeSummary]],
    layout: LogLayout,
    with_copy: bool,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    site: LocalSite = make_site(pristine_layouts[layout], tmp_path, monkeypatch)
    if with_copy:
        summary = refresh_access_log_copy(max_days=1000)
        assert summary.copied >= 180 and summary.not_copied == []
        assert summary.months_merged >= 6 and summary.months_bytes > 0
        again = refresh_access_log_copy()
        assert again.copied == 0 and again.current == summary.copied
        assert again.months_merged == 0 and again.months_current == summary.months_merged
    result = export_access_data(course_id=site.course, requested_by=site.teacher)
    window = AccessWindow(
        datetime.fromisoformat(result.details["window_start"]),
        datetime.fromisoformat(result.details["window_end"]),
    )
    data = Path(result.file_url).read_bytes()
    assert data == lake_reference_csv(site.lake, site.course, window)
    assert result.counts["events"] > 100
    # Every closed day inside the window came from the copy, and only then. Today is
    # open; early in a UTC day the tiny lake may not have a partition for it yet.
    in_window = [p for p in list_day_partitions(open_location(str(site.lake)), window) if p.files]
    closed = [p for p in in_window if p.end <= window.end]
    assert result.counts["days"] == len(in_window)
    assert result.counts["days_from_copy"] == (len(closed) if with_copy else 0)
