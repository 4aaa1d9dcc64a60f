"""The README's tables stay true: every setting and every deployed flow is in them, and
nothing is there that the code does not have (as sqlite-utils keeps its docs)."""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import yaml
from prefect import Flow

from course_exports.settings import ENV_PREFIX, Settings

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def section(title: str) -> str:
    start = README.index(f"\n## {title}\n")
    end = README.find("\n## ", start + 1)
    return README[start:end]


def first_cells(text: str) -> list[str]:
    """The first cell of every row of the markdown tables in ``text``, header left out."""
    return [
        match.group(1).strip()
        for match in re.finditer(r"^\| *([^|]+?) *\|", text, re.MULTILINE)
        if not match.group(1).startswith(("-", "variable", "flow"))
    ]


def test_the_configuration_table_lists_every_setting_and_only_them() -> None:
    listed = {cell.strip("`") for cell in first_cells(section("Configuration"))}
    settings = {ENV_PREFIX.upper() + name.upper() for name in Settings.model_fields}
    assert listed == settings


def test_the_flows_table_names_every_deployed_flow() -> None:
    cells = first_cells(section("The flows"))
    named = {m.group(1) for cell in cells for m in [re.match(r"`([^`]+)`", cell)] if m}
    deployed = {
        d["entrypoint"] for d in yaml.safe_load((ROOT / "prefect.yaml").read_text())["deployments"]
    }
    for entrypoint in deployed:
        path, _, name = entrypoint.partition(":")
        assert entrypoint in named or path in named, f"{entrypoint} is not in the README"
    for entry in named:
        path, _, name = entry.partition(":")
        module = importlib.import_module(path.removesuffix(".py").replace("/", "."))
        if name:
            assert isinstance(getattr(module, name), Flow), entry
