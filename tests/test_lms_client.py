"""LmsClient against a fake Prefect API (httpx.MockTransport): auth headers, idempotency
keys, errors. The real path is tests/test_e2e_lms.py."""

from __future__ import annotations

import base64
import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from course_exports import links
from deployments import lms_client
from deployments.lms_client import (
    ApiError,
    AuthError,
    DeploymentNotFound,
    LmsClient,
    ParametersRejected,
    ResultMissing,
    RunCancelled,
    RunCrashed,
    RunFailed,
    WaitTimeout,
)
from flows.hooks import RESULT_ARTIFACT_TYPE

API = "http://prefect.test/api"
COURSE = "export-course/export-course"
IMPORT = "import-project/import-project"


class FakeApi:
    """The few endpoints the client uses, with Prefect's idempotency semantics."""

    def __init__(self) -> None:
        self.deployments = {
            "export-course/export-course": {
                "id": "dep-course",
                "parameter_openapi_schema": {
                    "properties": {"course_id": {}, "requested_by": {}, "request_id": {}}
                },
            },
            "import-project/import-project": {
                "id": "dep-import",
                "parameter_openapi_schema": {"properties": {"export_id": {}}},
            },
        }
        self.runs: dict[str, dict[str, Any]] = {}
        self.by_key: dict[tuple[str, str], str] = {}
        self.artifacts: dict[str, list[dict[str, Any]]] = {}
        self.requests: list[httpx.Request] = []
        self.fail_next: list[int] = []
        self.reject_parameters = False
        self.polls_until_done = 0

    def finish(self, run_id: str, state_type: str, message: str | None = None) -> None:
        name = state_type.title()
        self.runs[run_id].update(
            state_type=state_type,
            state_name=name,
            state={"type": state_type, "name": name, "message": message},
        )

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if self.fail_next:
            return httpx.Response(self.fail_next.pop(0))
        path = request.url.path.removeprefix("/api/")
        body: Any = json.loads(request.content) if request.content else None
        if path.startswith("deployments/name/"):
            found = self.deployments.get(path.removeprefix("deployments/name/"))
            if found is None:
                return httpx.Response(404, json={"detail": "Deployment not found"})
            return httpx.Response(200, json=found)
        if path.endswith("/create_flow_run"):
            if self.reject_parameters:
                return httpx.Response(409, json={"detail": "'course_id' is a required property"})
            deployment_id = path.split("/")[1]
            key = (deployment_id, body["idempotency_key"])
            if key in self.by_key:
                return httpx.Response(200, json=self.runs[self.by_key[key]])
            run_id = str(uuid.uuid4())
            self.by_key[key] = run_id
            self.runs[run_id] = {
                "id": run_id,
                "name": "brave-fox",
                "deployment_id": deployment_id,
                "tags": body.get("tags", []),
                "parameters": body["parameters"],
                "idempotency_key": body["idempotency_key"],
                "state_type": "SCHEDULED",
                "state_name": "Scheduled",
                "state": {"type": "SCHEDULED", "name": "Scheduled", "message": None},
            }
            return httpx.Response(201, json=self.runs[run_id])
        if path == "flow_runs/filter":
            [key] = body["flow_runs"]["idempotency_key"]["any_"]
            matches = [run for run in self.runs.values() if run["idempotency_key"] == key]
            return httpx.Response(200, json=matches)
        if path.startswith("flow_runs/"):
            run = self.runs[path.removeprefix("flow_runs/")]
            if run["state_type"] == "SCHEDULED" and self.polls_until_done:
                self.polls_until_done -= 1
                if not self.polls_until_done:
                    self.finish(run["id"], "COMPLETED")
            return httpx.Response(200, json=run)
        if path == "artifacts/filter":
            [run_id] = body["artifacts"]["flow_run_id"]["any_"]
            assert body["artifacts"]["type"]["any_"] == [RESULT_ARTIFACT_TYPE]
            return httpx.Response(200, json=self.artifacts.get(run_id, []))
        return httpx.Response(404, json={"detail": f"no route {path}"})


@pytest.fixture
def api() -> FakeApi:
    return FakeApi()


def client(api: FakeApi, **kwargs: Any) -> LmsClient:
    return LmsClient(
        API,
        transport=httpx.MockTransport(api),
        sleep=lambda _: None,
        result_grace_s=0,
        **kwargs,
    )


def test_auth_headers(api: FakeApi) -> None:
    client(api, api_key="pnu_abc").deployment(COURSE)
    assert api.requests[-1].headers["authorization"] == "Bearer pnu_abc"
    client(api, basic_auth="lms:pa:ss").deployment(COURSE)
    sent = api.requests[-1].headers["authorization"]
    assert sent == "Basic " + base64.b64encode(b"lms:pa:ss").decode()  # as Prefect sends it
    client(api, basic_auth=("lms", "pw")).deployment(COURSE)
    assert (
        api.requests[-1].headers["authorization"] == "Basic " + base64.b64encode(b"lms:pw").decode()
    )
    client(api).deployment(COURSE)
    assert "authorization" not in api.requests[-1].headers
    with pytest.raises(ValueError, match="not both"):
        LmsClient(API, api_key="k", basic_auth="a:b")
    with pytest.raises(ValueError, match="user:password"):
        LmsClient(API, basic_auth="nocolon")


def test_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    with pytest.raises(lms_client.LmsClientError, match="PREFECT_API_URL"):
        LmsClient.from_env()
    monkeypatch.setenv("PREFECT_API_URL", API + "/")
    monkeypatch.setenv("PREFECT_API_AUTH_STRING", "admin:secret")
    monkeypatch.delenv("PREFECT_API_KEY", raising=False)
    with LmsClient.from_env() as made:
        assert made.api_url == API
        assert made._http.headers["authorization"].startswith("Basic ")


def test_refused_credentials_say_what_to_do(api: FakeApi) -> None:
    api.fail_next = [401]
    with pytest.raises(AuthError, match=r"refused the credentials \(HTTP 401\).*api_key"):
        client(api).deployment(COURSE)


def test_unknown_deployment(api: FakeApi) -> None:
    with pytest.raises(DeploymentNotFound, match="prefect deploy --all"):
        client(api).trigger("export-course/nope", {}, request_id="r")
    with pytest.raises(ValueError, match="flow-name/deployment-name"):
        client(api).trigger("export-course", {}, request_id="r")


def test_request_id_goes_into_the_parameters_and_the_key(api: FakeApi) -> None:
    lms = client(api)
    params = {"course_id": 1, "requested_by": 2}
    first = lms.trigger(COURSE, params, request_id="r-1")
    assert first.created and first.parameters == {**params, "request_id": "r-1"}
    assert first.idempotency_key.startswith("lms:r-1:")
    again = lms.trigger(COURSE, dict(reversed(params.items())), request_id="r-1")
    assert (again.id, again.created) == (first.id, False)  # same request: same run
    other = lms.trigger(COURSE, {**params, "student_ids": [5]}, request_id="r-1")
    assert other.created and other.id != first.id  # other parameters: never the first run
    assert other.idempotency_key != first.idempotency_key
    # a flow without request_id gets none, but the key still carries it
    imported = lms.trigger(IMPORT, {"export_id": "e"}, request_id="r-1")
    assert imported.parameters == {"export_id": "e"}
    with pytest.raises(ValueError, match="request_id"):
        lms.trigger(COURSE, {**params, "request_id": "r-2"}, request_id="r-1")
    with pytest.raises(ValueError, match="required"):
        lms.trigger(COURSE, params, request_id="")


def test_a_failed_request_gets_a_new_run_when_triggered_again(api: FakeApi) -> None:
    lms = client(api)
    first = lms.trigger(COURSE, {"course_id": 1}, request_id="r")
    api.finish(first.id, "CRASHED", "worker died")
    second = lms.trigger(COURSE, {"course_id": 1}, request_id="r")
    assert second.created and second.id != first.id
    third = lms.trigger(COURSE, {"course_id": 1}, request_id="r")
    assert third.id == second.id and not third.created  # converges while it is in flight
    api.finish(second.id, "FAILED", "boom")
    fourth = lms.trigger(COURSE, {"course_id": 1}, request_id="r")
    assert fourth.created and fourth.id not in (first.id, second.id)  # follows the chain
    kept = lms.trigger(COURSE, {"course_id": 1}, request_id="r", rerun_unsuccessful=False)
    assert (kept.id, kept.state_type) == (first.id, "CRASHED")  # the request's first run


def recovery_retries(api: FakeApi, run_id: str) -> str:
    """What flows/recovery.py does for a crashed run: its one retry, with the retry key."""
    crashed = api.runs[run_id]
    response = client(api)._request(
        "POST",
        f"deployments/{crashed['deployment_id']}/create_flow_run",
        {
            "parameters": crashed["parameters"],
            "idempotency_key": lms_client.retry_key(crashed),
            "tags": [lms_client.CRASH_RETRY_TAG],
        },
    )
    return str(response.json()["id"])


def test_a_crashed_first_attempt_is_followed_to_its_one_retry(api: FakeApi) -> None:
    lms = client(api)
    ref = lms.trigger(COURSE, {"course_id": 1}, request_id="r")
    api.finish(ref.id, "CRASHED", "process killed")
    with pytest.raises(WaitTimeout):  # no retry yet: the client waits for the recovery's
        lms.wait(ref.id, timeout_s=0)
    assert len(api.runs) == 1  # the client never makes the retry itself
    retry_id = recovery_retries(api, ref.id)
    api.polls_until_done = 2
    final = lms.wait(ref.id, timeout_s=5, poll_s=0)
    assert final.type == "COMPLETED" and final.run_id == retry_id
    api.artifacts[retry_id] = [{"type": "result", "data": {"export_id": "e"}}]
    assert lms.result(ref.id) == {"export_id": "e"}  # the request's outcome, not the crash
    assert len(api.runs) == 2


def test_a_crash_nobody_retries_is_reported_after_the_grace(api: FakeApi) -> None:
    lms = client(api, crash_grace_s=0)
    ref = lms.trigger(COURSE, {"course_id": 1}, request_id="r")
    api.finish(ref.id, "CRASHED", "process killed")
    with pytest.raises(RunCrashed, match="process killed"):
        lms.wait(ref.id, timeout_s=5)


def test_a_crashed_retry_is_the_outcome(api: FakeApi) -> None:
    lms = client(api)
    ref = lms.trigger(COURSE, {"course_id": 1}, request_id="r")
    api.finish(ref.id, "CRASHED", "process killed")
    retry_id = recovery_retries(api, ref.id)
    api.finish(retry_id, "CRASHED", "killed again")
    with pytest.raises(RunCrashed, match=f"{retry_id} .*killed again"):
        lms.wait(ref.id, timeout_s=5)
    with pytest.raises(RunCrashed):
        lms.result(ref.id)
    assert len(api.runs) == 2  # one retry, never a second


def test_parameters_rejected_by_the_schema(api: FakeApi) -> None:
    api.reject_parameters = True
    with pytest.raises(ParametersRejected, match="required property"):
        client(api).trigger(COURSE, {}, request_id="r")


@pytest.mark.parametrize(
    ("state", "error"),
    [("FAILED", RunFailed), ("CRASHED", RunCrashed), ("CANCELLED", RunCancelled)],
)
def test_wait_raises_with_the_state_message(
    api: FakeApi, state: str, error: type[Exception]
) -> None:
    lms = client(api)
    ref = lms.trigger(COURSE, {"course_id": 1}, request_id="r")
    api.runs[ref.id]["tags"] = [lms_client.CRASH_RETRY_TAG]  # a crashed retry is final
    api.finish(ref.id, state, "ConflictError: request_id 'r' was already used")
    with pytest.raises(error, match=f"{ref.id} .*ConflictError: request_id 'r' was already"):
        lms.wait(ref.id, timeout_s=5)


def test_wait_times_out_and_polls_until_done(api: FakeApi) -> None:
    lms = client(api)
    ref = lms.trigger(COURSE, {"course_id": 1}, request_id="r")
    with pytest.raises(WaitTimeout, match="still Scheduled after 0 s"):
        lms.wait(ref.id, timeout_s=0)
    api.polls_until_done = 3
    final = lms.wait(ref.id, timeout_s=5, poll_s=0)
    assert final.type == "COMPLETED"


def test_result_reads_the_result_artifact(api: FakeApi) -> None:
    lms = client(api)
    ref = lms.trigger(COURSE, {"course_id": 1}, request_id="r")
    with pytest.raises(lms_client.LmsClientError, match="not completed"):
        lms.result(ref.id)
    api.finish(ref.id, "COMPLETED")
    with pytest.raises(ResultMissing, match="completion hook"):
        lms.result(ref.id)
    api.artifacts[ref.id] = [{"type": "result", "data": {"export_id": "e", "status": "ready"}}]
    assert lms.result(ref.id) == {"export_id": "e", "status": "ready"}
    api.polls_until_done = 0
    second = lms.trigger(COURSE, {"course_id": 2}, request_id="r2")
    api.finish(second.id, "COMPLETED")
    api.artifacts[second.id] = [{"type": "result", "data": {"export_id": "f"}}]
    assert lms.export(COURSE, {"course_id": 2}, "r2", timeout_s=5) == {"export_id": "f"}


def test_transient_api_errors_are_retried_then_reported(api: FakeApi) -> None:
    lms = client(api, retries=2)
    api.fail_next = [503, 502]
    assert lms.deployment(COURSE)["id"] == "dep-course"
    api.fail_next = [503, 503, 503]
    with pytest.raises(ApiError, match="unreachable"):
        client(api, retries=2).deployment(COURSE)


def test_retries_back_off_with_jitter_and_honour_retry_after(api: FakeApi) -> None:
    """A burst of creates can keep SQLite busy for seconds (the storm met 503s for longer
    than three quick retries): waits grow, two clients do not come back in step, and a
    server's Retry-After is what it says."""
    waits: list[list[float]] = [[], []]
    for sleeps in waits:
        lms = LmsClient(API, transport=httpx.MockTransport(api), sleep=sleeps.append)
        api.fail_next = [503] * 5
        assert lms.deployment(COURSE)["id"] == "dep-course"  # the 6th try, the default
    for sleeps in waits:
        assert len(sleeps) == 5
        assert all(0.25 * 2**i <= wait <= 0.5 * 2**i for i, wait in enumerate(sleeps))
    assert waits[0] != waits[1]
    assert sum(waits[0]) <= 15.5

    def busy_then_fine(request: httpx.Request) -> httpx.Response:
        if not told:
            told.append(request)
            return httpx.Response(503, headers={"Retry-After": "7"})
        return api(request)

    told: list[httpx.Request] = []
    slept: list[float] = []
    LmsClient(API, transport=httpx.MockTransport(busy_then_fine), sleep=slept.append).deployment(
        COURSE
    )
    assert slept == [7.0]


def test_the_flows_publish_what_the_client_reads() -> None:
    assert lms_client.RESULT_ARTIFACT_TYPE == RESULT_ARTIFACT_TYPE


def test_the_client_and_the_recovery_name_a_crash_retry_alike() -> None:
    from tasks import recovery

    assert lms_client.CRASH_RETRY_TAG == recovery.CRASH_RETRY_TAG
    for key in ("lms:r:abc", None):
        run = {"id": "1f0c", "idempotency_key": key}
        assert lms_client.retry_key(run) == recovery.retry_key("1f0c", key)


def test_runs_carry_their_course_tag_and_can_be_listed_by_it(api: FakeApi) -> None:
    lms = client(api)
    ref = lms.trigger(COURSE, {"course_id": 1042}, request_id="r", tags=["page"])
    assert api.runs[ref.id]["tags"] == ["page", "course:1042"]
    assert lms_client.course_tags(["course-exports", "course:1042", "crash-retry"]) == [
        "course:1042"
    ]


def test_launch_url_opens_the_course_page_for_a_teacher() -> None:
    from course_exports import links

    lms = LmsClient(
        "http://prefect.invalid/api", signing_key="k" * 32, public_url="https://exports.example"
    )
    url = lms.launch_url(1042, 7, ttl_s=60)
    assert url.startswith("https://exports.example/courses/1042/launch?token=")
    claims = links.verify_user(b"k" * 32, url.split("token=")[1], purpose=links.LAUNCH)
    assert (claims.course_id, claims.user_id) == (1042, 7)
    with pytest.raises(lms_client.LmsClientError, match="Course Data page links"):
        LmsClient("http://prefect.invalid/api").launch_url(1042, 7)


def test_the_client_signs_the_download_link_the_api_never_carries(api: FakeApi) -> None:
    key = "lms-signing-key-" + "k" * 32
    expires = datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)
    export_id = uuid.uuid4().hex
    data = {"export_id": export_id, "course_id": 1042, "expires_at": expires.isoformat()}
    lms = client(api, signing_key=key, public_url="https://exports.example/")
    ref = lms.trigger(COURSE, {"course_id": 1042}, request_id="r")
    api.finish(ref.id, "COMPLETED")
    api.artifacts[ref.id] = [{"type": "result", "data": dict(data)}]
    result = lms.result(ref.id)
    assert result["download_url"] == links.download_url(
        "https://exports.example", key.encode(), 1042, export_id, expires
    )
    token = result["download_url"].rsplit("/", 1)[1]
    claims = links.verify(key.encode(), token, purpose=links.DOWNLOAD, now=expires - timedelta(1))
    assert (claims.course_id, claims.export_id, claims.expires_at) == (1042, export_id, expires)
    # Without the key: the result as the API holds it, and a clear refusal to make a link.
    plain = client(api)
    assert "download_url" not in plain.result(ref.id)
    with pytest.raises(lms_client.LmsClientError, match="signing_key"):
        plain.download_url(data)
    with pytest.raises(ValueError, match="together"):
        client(api, signing_key=key)
