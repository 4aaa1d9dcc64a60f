"""The pull step of prefect.yaml: run every flow from the checkout that holds its code.

Prefect's own ``set_working_directory`` needs a fixed path, and a ``{{ $VAR }}`` placeholder
left unset becomes an empty path at run time. This step has a default that is right for
any worker started from this repo's venv: the checkout (or site-packages) the venv
imports this very module from, where ``flows/…`` entrypoints and a ``.env`` file live.
"""

from __future__ import annotations

import os
from pathlib import Path

from prefect.deployments.steps import set_working_directory

#: Overrides the directory flows run in (the repo checkout on the worker's machine).
HOME_VARIABLE = "COURSE_EXPORT_HOME"


def default_checkout() -> Path:
    """The directory holding the ``flows``, ``tasks`` and ``deployments`` packages in use."""
    return Path(__file__).resolve().parent.parent


def checkout_directory(directory: str | None = None) -> Path:
    chosen = directory or os.environ.get(HOME_VARIABLE) or str(default_checkout())
    path = Path(chosen).expanduser()
    if not (path / "flows").is_dir():
        # Fail the pull step with the fix, not the flow later with "file not found".
        raise FileNotFoundError(
            f"{path} holds no flows/ folder: set {HOME_VARIABLE} on the worker to the "
            "course-exports checkout (or start the worker from the repo's venv)"
        )
    return path


def enter_checkout(directory: str | None = None) -> dict[str, str]:
    """Pull step: ``deployments.steps.enter_checkout: {}`` (``directory`` overrides)."""
    return set_working_directory(str(checkout_directory(directory)))
