"""What the LMS calls: start an export through the Prefect REST API, wait, read the result.

Only httpx, so the LMS needs neither Prefect nor this project installed::

    client = LmsClient("https://prefect.example/api", basic_auth="lms:secret")
    result = client.export(
        "export-course/export-course",
        {"course_id": 1042, "requested_by": 7},
        request_id="lms-req-81723",
        timeout_s=3600,
    )
    result["download_url"], result["sha256"], result["expires_at"]

Idempotency. Prefect's idempotency key, reused with other parameters, silently returns the
first run; so the key is the LMS request id *and* a hash of the parameters. The same
request sent twice yields one run and one export; the same request id with other
parameters starts a new run, which the export flow refuses (ConflictError, surfaced here
as RunFailed) instead of handing back an export of something else. The request id is also
passed to flows that take one, which is what makes a completed request return the same
export even from a new run. A request whose run failed, crashed or was cancelled gets a
fresh run when triggered again (otherwise the LMS could never retry it).

Crashes. A run whose process died (Crashed) is run again once, automatically, with the
same parameters (tasks/recovery.py): that retry carries the tag ``crash-retry`` and the
idempotency key ``<key>:after:<crashed run id>``. :meth:`LmsClient.wait` and
:meth:`LmsClient.result` follow a crashed first attempt to its retry (creating it with
that same key if the project's automation has not yet, so there is still one retry),
and report the retry's outcome: the LMS sees how the request ended, not the crash.

The result. The flows persist their result in the worker's result storage, which the API
only points to; so they also publish it as a ``result`` artifact on the flow run
(flows/hooks.py), and :meth:`LmsClient.result` reads that. The artifact holds no download
link (every reader of the Prefect API could use one): given the signing key the LMS
already holds (``COURSE_EXPORT_SIGNING_KEY``, which also mints its Course Data page launch
tokens) and the download service's public URL, the client signs the link itself from the
artifact's ``course_id``, ``export_id`` and ``expires_at`` — the same link the flow
returns and mails. Signing needs ``course_exports/links.py`` (standard library only):
install this package, or copy that file beside this one.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import random
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import quote

import httpx

#: Published by the export flows' completion hook (flows/hooks.py).
RESULT_ARTIFACT_TYPE = "result"
DEFAULT_TIMEOUT = httpx.Timeout(30.0, connect=5.0)
#: Carried by the automatic retry of a crashed run (tasks/recovery.py has the same).
CRASH_RETRY_TAG = "crash-retry"
TERMINAL_STATES = frozenset({"COMPLETED", "FAILED", "CRASHED", "CANCELLED"})
_UNSUCCESSFUL = frozenset({"FAILED", "CRASHED", "CANCELLED"})
_RETRY_STATUS = frozenset({502, 503, 504})
#: How many failed runs of one request a trigger walks past before it gives up.
_MAX_RERUNS = 20
#: Every run this client starts for a course carries this tag, so the Course Data page
#: can show it as queued before its flow has claimed an export.
COURSE_TAG = "course:{}"
#: Flow-run state types of a run that has not ended.
ACTIVE_STATES = ("SCHEDULED", "PENDING", "RUNNING", "PAUSED")


def course_tag(course_id: int) -> str:
    return COURSE_TAG.format(course_id)


def course_tags(tags: Iterable[str]) -> list[str]:
    """The course tags among a run's tags: a retry carries them on, so the Course Data
    page shows the retry too."""
    prefix = COURSE_TAG.format("")
    return [tag for tag in tags if tag.startswith(prefix)]


class LmsClientError(Exception):
    """Base of everything this client raises."""


class ApiError(LmsClientError):
    """The Prefect API answered with an error."""

    def __init__(self, message: str, *, status_code: int | None = None, detail: Any = None):
        super().__init__(message)
        self.status_code = status_code
        self.detail = detail


class AuthError(ApiError):
    """The API refused the credentials."""


class DeploymentNotFound(ApiError):
    """No deployment of that name on this API (not deployed yet, or a typo)."""


class ParametersRejected(ApiError):
    """The deployment's parameter schema refused the parameters."""


class RunEnded(LmsClientError):
    """The run reached a final state other than Completed."""

    def __init__(self, run_id: str, state_name: str, message: str | None) -> None:
        what = type(self).__name__.removeprefix("Run").lower()
        super().__init__(f"flow run {run_id} {what} ({state_name}): {message or 'no message'}")
        self.run_id = run_id
        self.state_name = state_name
        self.state_message = message


class RunFailed(RunEnded):
    """The flow raised: the message says why (e.g. ConflictError, PermissionDeniedError)."""


class RunCrashed(RunEnded):
    """The run's process or machine died; triggering the request again starts a new run."""


class RunCancelled(RunEnded):
    """Someone cancelled the run."""


class WaitTimeout(LmsClientError):
    def __init__(self, run_id: str, state_name: str | None, timeout_s: float) -> None:
        super().__init__(
            f"flow run {run_id} still {state_name or 'unknown'} after {timeout_s:.0f} s "
            "(it goes on; wait again or look at it in the Prefect UI)"
        )
        self.run_id = run_id
        self.state_name = state_name


class ResultMissing(LmsClientError):
    """The run completed but its result artifact is not there."""


@dataclass(frozen=True)
class FlowRunRef:
    id: str
    name: str
    deployment: str
    idempotency_key: str
    parameters: dict[str, Any]
    #: False when the API returned an existing run for the same request.
    created: bool
    state_type: str | None


@dataclass(frozen=True)
class FinalState:
    run_id: str
    type: str
    name: str
    message: str | None
    start_time: str | None
    end_time: str | None


def canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


def _retry_after_s(response: httpx.Response) -> float | None:
    """A ``Retry-After`` of seconds (capped at a minute), if the server sent one."""
    try:
        return min(60.0, max(0.0, float(response.headers["retry-after"])))
    except (KeyError, ValueError):
        return None


def idempotency_key(deployment: str, parameters: Mapping[str, Any], request_id: str) -> str:
    """The request id and a hash of what was asked: never the same key for other parameters."""
    digest = hashlib.sha256(canonical_json({"d": deployment, "p": dict(parameters)}).encode())
    return f"lms:{request_id}:{digest.hexdigest()[:32]}"


def retry_key(run: Mapping[str, Any]) -> str:
    """The idempotency key of the next run of a request after ``run`` ended unsuccessfully
    (tasks/recovery.py derives the same for the retry of a crash)."""
    return f"{run.get('idempotency_key') or run['id']}:after:{run['id']}"


def _crashed_first_attempt(run: Mapping[str, Any]) -> bool:
    """A crash the project retries on its own: a run that is not itself that retry."""
    return run.get("state_type") == "CRASHED" and CRASH_RETRY_TAG not in (run.get("tags") or [])


def _split_deployment(deployment: str) -> tuple[str, str]:
    flow, sep, name = deployment.partition("/")
    if not sep or not flow or not name or "/" in name:
        raise ValueError(f"deployment {deployment!r} is not 'flow-name/deployment-name'")
    return flow, name


def _raise_for_state(run_id: str, state_type: str, state: Mapping[str, Any]) -> None:
    name, message = state.get("name") or state_type, state.get("message")
    if state_type == "FAILED":
        raise RunFailed(run_id, name, message)
    if state_type == "CRASHED":
        raise RunCrashed(run_id, name, message)
    if state_type == "CANCELLED":
        raise RunCancelled(run_id, name, message)


class LmsClient:
    """A small, synchronous client of the Prefect REST API (server or Cloud).

    ``api_key``: a Prefect Cloud API key (sent as a Bearer token). ``basic_auth``: a
    Prefect server's ``PREFECT_SERVER_API_AUTH_STRING`` (``"user:password"``), sent as
    Prefect's own client sends it. Reads, the run lookup and the idempotent run creation
    are retried on connection errors and 502/503/504.
    """

    def __init__(
        self,
        api_url: str,
        *,
        api_key: str | None = None,
        basic_auth: str | tuple[str, str] | None = None,
        timeout: httpx.Timeout = DEFAULT_TIMEOUT,
        retries: int = 5,
        retry_delay_s: float = 0.5,
        result_grace_s: float = 15.0,
        crash_grace_s: float = 300.0,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
        signing_key: str | bytes | None = None,
        public_url: str | None = None,
    ) -> None:
        if api_key and basic_auth:
            raise ValueError(
                "give api_key (Prefect Cloud) or basic_auth (Prefect server), not both"
            )
        headers = {"Accept": "application/json"}
        if api_key:
            headers["Authorization"] = f"Bearer {api_key}"
        elif basic_auth:
            auth = basic_auth if isinstance(basic_auth, str) else ":".join(basic_auth)
            if ":" not in auth:
                raise ValueError("basic_auth must be 'user:password'")
            headers["Authorization"] = "Basic " + base64.b64encode(auth.encode()).decode()
        self.api_url = api_url.rstrip("/")
        self._http = httpx.Client(
            base_url=self.api_url + "/", headers=headers, timeout=timeout, transport=transport
        )
        self._retries = retries
        self._retry_delay_s = retry_delay_s
        self._result_grace_s = result_grace_s
        #: How long a crashed first attempt may go without its automatic retry before
        #: ``wait`` reports the crash (the recovery is a flow run: it takes a while).
        self._crash_grace_s = crash_grace_s
        self._sleep = sleep
        self._deployments: dict[str, dict[str, Any]] = {}
        if (signing_key is None) != (public_url is None):
            raise ValueError("give signing_key and public_url together (to sign download links)")
        self._signing_key = signing_key.encode() if isinstance(signing_key, str) else signing_key
        self._public_url = public_url

    @classmethod
    def from_env(cls, **kwargs: Any) -> LmsClient:
        """From Prefect's own variables: PREFECT_API_URL, and PREFECT_API_KEY (Cloud) or
        PREFECT_API_AUTH_STRING (server with basic auth); COURSE_EXPORT_SIGNING_KEY and
        COURSE_EXPORT_PUBLIC_URL, when set, to sign download links."""
        api_url = os.environ.get("PREFECT_API_URL")
        if not api_url:
            raise LmsClientError("PREFECT_API_URL is not set")
        kwargs.setdefault("signing_key", os.environ.get("COURSE_EXPORT_SIGNING_KEY") or None)
        kwargs.setdefault("public_url", os.environ.get("COURSE_EXPORT_PUBLIC_URL") or None)
        return cls(
            api_url,
            api_key=os.environ.get("PREFECT_API_KEY") or None,
            basic_auth=os.environ.get("PREFECT_API_AUTH_STRING") or None,
            **kwargs,
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> LmsClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- HTTP --------------------------------------------------------------------------

    def _request(self, method: str, path: str, body: Any = None) -> httpx.Response:
        last: Exception | None = None
        wait_s = 0.0
        for attempt in range(self._retries + 1):
            if attempt:
                self._sleep(wait_s)
            try:
                response = self._http.request(method, path, json=body)
            except httpx.TransportError as exc:
                last = exc
                wait_s = self._backoff_s(attempt)
                continue
            if response.status_code in _RETRY_STATUS:
                last = ApiError(
                    f"{method} {path}: HTTP {response.status_code}",
                    status_code=response.status_code,
                )
                wait_s = _retry_after_s(response) or self._backoff_s(attempt)
                continue
            return response
        raise ApiError(
            f"Prefect API at {self.api_url} unreachable ({method} {path}): "
            f"{type(last).__name__}: {last}"
        )

    def _backoff_s(self, attempt: int) -> float:
        """Exponential, with jitter: a storm of LMS threads that met the same 503 (SQLite
        busy under a burst of creates) must not come back in step."""
        return self._retry_delay_s * 2**attempt * random.uniform(0.5, 1.0)

    def _json(self, method: str, path: str, body: Any = None) -> Any:
        response = self._request(method, path, body)
        self._check(response, f"{method} {path}")
        return response.json()

    def _check(self, response: httpx.Response, what: str) -> None:
        if response.is_success:
            return
        try:
            detail = response.json().get("detail", response.text)
        except (ValueError, AttributeError):
            detail = response.text
        status = response.status_code
        if status in (401, 403):
            raise AuthError(
                f"Prefect API at {self.api_url} refused the credentials (HTTP {status}) for "
                f"{what}: give api_key= for Prefect Cloud, or basic_auth='user:password' for a "
                "server with PREFECT_SERVER_API_AUTH_STRING",
                status_code=status,
                detail=detail,
            )
        raise ApiError(f"{what}: HTTP {status}: {detail}", status_code=status, detail=detail)

    # -- deployments and runs ----------------------------------------------------------

    def deployment(self, deployment: str) -> dict[str, Any]:
        """The deployment ``flow-name/deployment-name`` (cached: ids do not change)."""
        if deployment not in self._deployments:
            flow, name = _split_deployment(deployment)
            path = f"deployments/name/{quote(flow, safe='')}/{quote(name, safe='')}"
            response = self._request("GET", path)
            if response.status_code == 404:
                raise DeploymentNotFound(
                    f"no deployment {deployment!r} on {self.api_url} (run `prefect deploy --all` "
                    "from the course-exports checkout, or check the name)",
                    status_code=404,
                )
            self._check(response, f"deployment {deployment!r}")
            self._deployments[deployment] = response.json()
        return self._deployments[deployment]

    def _takes(self, deployment: Mapping[str, Any], parameter: str) -> bool:
        schema = deployment.get("parameter_openapi_schema") or {}
        return parameter in (schema.get("properties") or {})

    def trigger(
        self,
        deployment: str,
        parameters: Mapping[str, Any],
        *,
        request_id: str,
        rerun_unsuccessful: bool = True,
        tags: list[str] | None = None,
    ) -> FlowRunRef:
        """Start (or find) the run of this LMS request; returns without waiting. The run
        is tagged with ``tags`` and, when the parameters name a course, its course tag."""
        if not request_id:
            raise ValueError("request_id is required: it makes a retried request safe")
        found = self.deployment(deployment)
        params = dict(parameters)
        if self._takes(found, "request_id"):
            if params.get("request_id") not in (None, request_id):
                raise ValueError(
                    f"parameters say request_id={params['request_id']!r}, "
                    f"the call says {request_id!r}"
                )
            params["request_id"] = request_id
        key = idempotency_key(deployment, params, request_id)
        run_tags = list(tags or [])
        if isinstance(params.get("course_id"), int):
            run_tags.append(course_tag(params["course_id"]))
        retry_tags: list[str] = []
        for _ in range(_MAX_RERUNS):
            run, created = self._create_run(
                deployment, found["id"], params, key, run_tags + retry_tags
            )
            if created or not rerun_unsuccessful or run.get("state_type") not in _UNSUCCESSFUL:
                return FlowRunRef(
                    id=str(run["id"]),
                    name=run.get("name", ""),
                    deployment=deployment,
                    idempotency_key=key,
                    parameters=params,
                    created=created,
                    state_type=run.get("state_type"),
                )
            # The request's last run did not succeed: chain a new key on it, so concurrent
            # retries of the same request still converge on one new run.
            retry_tags = [CRASH_RETRY_TAG] if _crashed_first_attempt(run) else []
            key = retry_key(run)
        raise LmsClientError(
            f"request {request_id!r} of {deployment} failed {_MAX_RERUNS} times; not retrying"
        )

    def _create_run(
        self,
        deployment: str,
        deployment_id: str,
        params: Mapping[str, Any],
        key: str,
        tags: list[str],
    ) -> tuple[dict[str, Any], bool]:
        """The run of ``deployment`` with this idempotency key: created, or the existing one."""
        body: dict[str, Any] = {"parameters": dict(params), "idempotency_key": key}
        if tags:
            body["tags"] = tags
        response = self._request("POST", f"deployments/{deployment_id}/create_flow_run", body)
        if response.status_code in (409, 422):
            detail = response.json().get("detail", response.text)
            raise ParametersRejected(
                f"{deployment} refused the parameters {canonical_json(params)}: {detail}",
                status_code=response.status_code,
                detail=detail,
            )
        self._check(response, f"start a run of {deployment!r}")
        run: dict[str, Any] = response.json()
        return run, response.status_code == 201

    def _follow_crash(self, run: dict[str, Any]) -> dict[str, Any]:
        """The run itself, or for a crashed first attempt its automatic retry once the
        project's recovery has made it (found by the retry's idempotency key). The client
        never makes it: the recovery first gives back the dead run's leases."""
        while _crashed_first_attempt(run):
            found = self._json(
                "POST",
                "flow_runs/filter",
                {"flow_runs": {"idempotency_key": {"any_": [retry_key(run)]}}, "limit": 1},
            )
            if not found:
                return run
            run = found[0]
        return run

    def course_runs(
        self, course_id: int, state_types: Iterable[str] = ACTIVE_STATES, limit: int = 50
    ) -> list[dict[str, Any]]:
        """The newest runs started for the course (by its tag) in those state types."""
        body = {
            "flow_runs": {
                "tags": {"all_": [course_tag(course_id)]},
                "state": {"type": {"any_": list(state_types)}},
            },
            "sort": "EXPECTED_START_TIME_DESC",
            "limit": limit,
        }
        runs: list[dict[str, Any]] = self._json("POST", "flow_runs/filter", body)
        return runs

    def read_run(self, run_id: str) -> dict[str, Any]:
        run: dict[str, Any] = self._json("GET", f"flow_runs/{run_id}")
        return run

    def wait(self, run_id: str, *, timeout_s: float = 3600, poll_s: float = 2.0) -> FinalState:
        """Poll until the run is final. Completed: its FinalState; otherwise RunFailed,
        RunCrashed or RunCancelled with the state's message; WaitTimeout
        when ``timeout_s`` passes first (the run goes on). A crashed first attempt is
        followed to its automatic retry: the FinalState's ``run_id`` is then the retry's."""
        deadline = time.monotonic() + timeout_s
        crashed_at: float | None = None
        while True:
            run = self._follow_crash(self.read_run(run_id))
            run_id = str(run["id"])
            state = run.get("state") or {}
            state_type = run.get("state_type") or state.get("type")
            if _crashed_first_attempt(run):  # its retry is being made: wait for it
                crashed_at = crashed_at or time.monotonic()
                if time.monotonic() - crashed_at < self._crash_grace_s:
                    state_type = None
            if state_type in TERMINAL_STATES:
                _raise_for_state(run_id, state_type, state)
                return FinalState(
                    run_id=run_id,
                    type=state_type,
                    name=state.get("name") or state_type,
                    message=state.get("message"),
                    start_time=run.get("start_time"),
                    end_time=run.get("end_time"),
                )
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise WaitTimeout(run_id, run.get("state_name"), timeout_s)
            self._sleep(min(poll_s, remaining))

    def _signer(self, what: str) -> tuple[str, bytes]:
        if self._signing_key is None or self._public_url is None:
            raise LmsClientError(
                "no signing key: give LmsClient(signing_key=..., public_url=...) (the "
                "COURSE_EXPORT_SIGNING_KEY and COURSE_EXPORT_PUBLIC_URL of the service) to "
                f"get {what}; the Prefect API never carries them"
            )
        return self._public_url, self._signing_key

    def download_url(self, result: Mapping[str, Any]) -> str:
        """The download link of an export result (CONTRACT 5), signed here with the key
        the download service checks: the same link the flow returned and mailed."""
        public_url, key = self._signer("download links")
        from course_exports import links  # standard library only; see the module's notes

        expires_at = datetime.fromisoformat(str(result["expires_at"]).replace("Z", "+00:00"))
        return links.download_url(
            public_url, key, int(result["course_id"]), str(result["export_id"]), expires_at
        )

    def launch_url(self, course_id: int, teacher_id: int, *, ttl_s: float = 300) -> str:
        """The link that opens the course's Course Data page for one of its teachers,
        valid ``ttl_s`` seconds: mint it when the teacher clicks **Course Data**. The page
        exchanges it for a session cookie and checks the roster; the LMS also sends it as
        ``Authorization: Bearer <token>`` to ``GET /courses/<id>/exports`` (the JSON list)."""
        public_url, key = self._signer("Course Data page links")
        from course_exports import links

        ttl = timedelta(seconds=ttl_s)
        return links.launch_url(public_url, key, course_id, teacher_id, ttl=ttl)

    def result(self, run_id: str) -> dict[str, Any]:
        """The export result (CONTRACT 3) of a completed run, from its ``result`` artifact
        (of its automatic retry, when the run crashed), with its ``download_url`` signed
        here when the client has the signing key."""
        run = self._follow_crash(self.read_run(run_id))
        run_id = str(run["id"])
        state_type = run.get("state_type")
        if state_type != "COMPLETED":
            _raise_for_state(run_id, str(state_type), run.get("state") or {})
            raise LmsClientError(f"flow run {run_id} is {run.get('state_name')}, not completed")
        query = {
            "artifacts": {
                "flow_run_id": {"any_": [run_id]},
                "type": {"any_": [RESULT_ARTIFACT_TYPE]},
            },
            "sort": "CREATED_DESC",
            "limit": 1,
        }
        # The completion hook publishes it just after the state turns Completed.
        deadline = time.monotonic() + self._result_grace_s
        while True:
            found = self._json("POST", "artifacts/filter", query)
            if found:
                data = found[0].get("data")
                result: dict[str, Any] = json.loads(data) if isinstance(data, str) else data
                if self._signing_key is not None:
                    result["download_url"] = self.download_url(result)
                return result
            if time.monotonic() >= deadline:
                raise ResultMissing(
                    f"flow run {run_id} completed but published no result artifact within "
                    f"{self._result_grace_s:.0f} s: its completion hook failed (see the run's "
                    "logs) or the deployment is not an export flow"
                )
            self._sleep(0.5)

    def export(
        self,
        deployment: str,
        parameters: Mapping[str, Any],
        request_id: str,
        timeout_s: float = 3600,
        *,
        poll_s: float = 2.0,
    ) -> dict[str, Any]:
        """Trigger, wait, and return the result: the one call most LMS code needs."""
        ref = self.trigger(deployment, parameters, request_id=request_id)
        final = self.wait(ref.id, timeout_s=timeout_s, poll_s=poll_s)
        return self.result(final.run_id)
