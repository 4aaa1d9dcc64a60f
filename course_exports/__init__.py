"""Plain, typed domain logic of the course-data exports (no Prefect in here)."""
