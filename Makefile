# Two commands do all set-up on a fresh machine with Python 3.11+ and make:
#   make demo   - sample lake + the access-data export through Prefect (ephemeral API)
#   make test   - lint, types and every test
PYTHON ?= python3
UV_VERSION = 0.13.8
TOOLS = .tools
UV = $(TOOLS)/bin/uv
VENV = .venv
BIN = $(VENV)/bin
export UV_PROJECT_ENVIRONMENT = $(VENV)
export PREFECT_SERVER_ANALYTICS_ENABLED = false
POOL = course-exports

.PHONY: setup demo test lint unit e2e serve-downloads sample-lake bench-access bench-course bench-archive bench-scale clean \
	server deploy worker serve up

$(UV):
	$(PYTHON) -m venv $(TOOLS)
	$(TOOLS)/bin/python -m pip install --quiet uv==$(UV_VERSION)

# --compile-bytecode: every flow run, worker, server and packer is a fresh Python process,
# and where PYTHONDONTWRITEBYTECODE is set (this machine, most container images) each one
# would compile Prefect, Polars and pydantic from source again: 4.9 s against 1.9 s to
# import a flow's modules here (README: Launching a flow run).
$(VENV)/.synced: $(UV) pyproject.toml uv.lock Makefile
	$(UV) sync --locked --compile-bytecode --python $(PYTHON)
	touch $@

setup: $(VENV)/.synced

demo: setup
	$(BIN)/python -m deployments.demo

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy course_exports sample_lake tasks flows deployments benchmarks tests

test: lint
	$(BIN)/python -m pytest

unit: setup
	$(BIN)/python -m pytest -m "not flow and not e2e"

e2e: setup
	$(BIN)/python -m pytest -m e2e

# Running it as a service (docs/operations.md). deploy, worker and serve talk to the
# Prefect server in PREFECT_API_URL (e.g. http://127.0.0.1:4200/api).
server: setup
	$(BIN)/prefect server start

deploy: setup
	$(BIN)/prefect work-pool inspect $(POOL) >/dev/null 2>&1 || \
		$(BIN)/prefect work-pool create $(POOL) --type process
	$(BIN)/prefect --no-prompt deploy --all
	$(BIN)/python -m deployments.automations

# The venv's bin first on PATH: flow runs start as `python -m prefect.engine` (prefect.yaml).
worker: setup
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/prefect worker start --pool $(POOL)

serve: setup
	$(BIN)/python -m deployments.serve

# The whole stack on one machine: Prefect server, served deployments, web app (Ctrl-C stops it).
up: setup
	$(BIN)/course-exports up

serve-downloads: setup
	$(BIN)/python -m deployments.download_service

sample-lake: setup
	$(BIN)/python -m sample_lake --url ./var/lake

bench-access: setup
	$(BIN)/python benchmarks/access_export.py
	$(BIN)/python benchmarks/access_export_s3.py

bench-course: setup
	$(BIN)/python benchmarks/course_mixes.py --repeat 3
	$(BIN)/python benchmarks/course_export.py
	$(BIN)/python benchmarks/course_export_s3.py

bench-archive: setup
	$(BIN)/python benchmarks/archive_throughput.py

bench-scale: setup
	$(BIN)/python benchmarks/scale_out.py

clean:
	rm -rf $(VENV) $(TOOLS) var .pytest_cache .mypy_cache .ruff_cache
