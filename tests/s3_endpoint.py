"""moto's S3 server as the tests and benchmarks run it.

moto's server works out which AWS service a request is for by listing its own package
folder and ``stat``-ing each of ~180 entries, twice per request, under a global lock
(``moto.backends.list_of_moto_modules``, called from ``get_backend_for_host``): about
2 ms of CPU on every request, half of what an S3 GET costs it. The folder does not
change while the server runs, so the listing is cached here. Nothing else of moto is
touched: requests, storage and responses stay moto's own.

    python tests/s3_endpoint.py -H 127.0.0.1 -p 5000   # moto.server's own arguments
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterable


def speed_up_moto() -> None:
    """Cache moto's per-request listing of its backends, and keep werkzeug's per-request
    log lines out of the way (formatting them is CPU too). Idempotent."""
    from moto import backends

    listing = backends.list_of_moto_modules
    if getattr(listing, "cached", False):
        return

    modules = tuple(listing())

    def cached_list_of_moto_modules() -> Iterable[str]:
        return modules

    cached_list_of_moto_modules.cached = True  # type: ignore[attr-defined]
    backends.list_of_moto_modules = cached_list_of_moto_modules
    logging.getLogger("werkzeug").setLevel(logging.WARNING)


def main(argv: list[str]) -> int:
    from moto import server

    speed_up_moto()
    server.main(argv)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
