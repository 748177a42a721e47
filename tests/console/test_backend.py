"""The console's back end against a real alerting API (in process) and a real InfluxDB: sessions, CSRF,
security headers, the relayed live stream, inactivity logout and trends read with the read-only user."""

from __future__ import annotations

import base64
import json
import re
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from tests.alerting.serving import PASSWORD, api_config, raise_alarm, serving_api, webhook_ward

from wardwatch.alerting.auth import Role
from wardwatch.alerting.engine import Engine
from wardwatch.alerting.rules import RuleSet
from wardwatch.alerting.service import AlarmService
from wardwatch.alerting.testing import WebhookReceiver
from wardwatch.console.app import COOKIE, STATIC_DIR, build_app
from wardwatch.console.config import AlertingSettings, ConsoleConfig, InfluxSettings
from wardwatch.core.config import Secret
from wardwatch.core.servers import Influxd

IDLE_S = 30.0


@dataclass
class FakeClock:
    t: float = 1000.0

    def __call__(self) -> float:
        return self.t


@dataclass
class Console:
    base: str
    service: AlarmService
    clock: FakeClock
    http: aiohttp.ClientSession
    csrf: str = ""
    cookies: dict[str, Any] = field(default_factory=dict)

    async def login(self, name: str = "ann") -> dict[str, Any]:
        async with self.http.post(self.base + "/api/login", json={"name": name, "password": PASSWORD}) as response:
            assert response.status == 200, await response.text()
            body: dict[str, Any] = await response.json()
            self.cookies["set-cookie"] = response.headers["Set-Cookie"]
        self.csrf = body["csrf"]
        return body


async def start_console(
    stack: AsyncExitStack, tmp_path: Path, influx: InfluxSettings | None = None
) -> tuple[Console, AlarmService]:
    receiver = await stack.enter_async_context(WebhookReceiver())
    config = api_config(tmp_path, webhook_ward(receiver, timeout_s=600))
    users = {"ann": Role.NURSE, "cat": Role.CHARGE_NURSE}
    service, api_port = await stack.enter_async_context(serving_api(config, users))
    console_config = ConsoleConfig(
        ward="ward-a",
        idle_logout_s=IDLE_S,
        alerting=AlertingSettings(url=f"http://127.0.0.1:{api_port}"),
        influx=influx or InfluxSettings(),
    )
    clock = FakeClock()
    runner = web.AppRunner(build_app(console_config, clock=clock), access_log=None)
    await runner.setup()
    stack.push_async_callback(runner.cleanup)
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    # unsafe: keep cookies of an IP address host (127.0.0.1), as a browser does
    http = await stack.enter_async_context(aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)))
    return Console(f"http://127.0.0.1:{port}", service, clock, http), service


@pytest.fixture
async def console(tmp_path: Path) -> AsyncIterator[Console]:
    async with AsyncExitStack() as stack:
        result, _ = await start_console(stack, tmp_path)
        yield result


async def influx_with_a_reader(stack: AsyncExitStack, tmp_path: Path) -> Influxd:
    """InfluxDB with the ``wardwatch`` database (retention policies ``raw``, the default, and ``downsampled``), its
    admin ``admin`` and a read-only user ``reader``."""
    influxd = await stack.enter_async_context(Influxd(directory=tmp_path / "influxd", auth=("admin", "admin-pw")))
    await influxd.create_database("wardwatch")
    await influxd.query('CREATE RETENTION POLICY "raw" ON "wardwatch" DURATION 30d REPLICATION 1 DEFAULT')
    await influxd.query('CREATE RETENTION POLICY "downsampled" ON "wardwatch" DURATION 730d REPLICATION 1')
    await influxd.ensure_user("reader", "reader-pw", privilege="READ", database="wardwatch")
    return influxd


async def write_as_admin(influxd: Influxd, rp: str, lines: str) -> None:
    """Line protocol (ms) into ``wardwatch``'s retention policy ``rp``."""
    basic = {"Authorization": "Basic " + base64.b64encode(b"admin:admin-pw").decode()}
    async with (
        aiohttp.ClientSession(headers=basic) as admin,
        admin.post(
            f"{influxd.url}/write", params={"db": "wardwatch", "rp": rp, "precision": "ms"}, data=lines
        ) as response,
    ):
        assert response.status == 204, await response.text()


async def reader_console(stack: AsyncExitStack, tmp_path: Path, influxd: Influxd) -> Console:
    """A console reading ``influxd`` as its read-only user, ann logged in."""
    reader = InfluxSettings(url=influxd.url, username="reader", password=Secret("reader-pw"))
    console, _ = await start_console(stack, tmp_path, reader)
    await console.login()
    return console


async def test_login_keeps_the_api_token_on_the_server_behind_an_httponly_strict_cookie(console: Console) -> None:
    body = await console.login()
    assert body["role"] == "nurse"
    assert "wwt_" not in json.dumps(body)
    cookie = console.cookies["set-cookie"]
    assert cookie.startswith(f"{COOKIE}=")
    assert "HttpOnly" in cookie
    assert "SameSite=Strict" in cookie
    assert "wwt_" not in cookie  # API tokens start so: it never reaches the browser
    async with console.http.get(console.base + "/api/session") as response:
        assert response.status == 200
        assert (await response.json())["name"] == "ann"
    async with console.http.post(console.base + "/api/login", json={"name": "ann", "password": "wrong!"}) as response:
        assert response.status == 401


async def test_every_response_has_a_strict_csp_and_the_page_has_no_inline_script(console: Console) -> None:
    async with console.http.get(console.base + "/") as response:
        assert response.status == 200
        page = await response.text()
        csp = response.headers["Content-Security-Policy"]
    assert "script-src 'self'" in csp
    assert "unsafe-inline" not in csp
    assert "frame-ancestors 'none'" in csp
    scripts = re.findall(r"<script([^>]*)>(.*?)</script>", page, re.S)
    assert scripts
    assert all('src="/static/' in attrs and not body.strip() for attrs, body in scripts)
    assert not re.search(r"<[^>]+\son[a-z]+=", page)  # no inline event handlers
    assert not re.search(r"https?://", page)  # nothing from elsewhere
    for asset in ("app.js", "console.css", "vendor/uPlot.esm.js", "vendor/uPlot.min.css"):
        async with console.http.get(f"{console.base}/static/{asset}") as response:
            assert response.status == 200, asset
            assert "Content-Security-Policy" in response.headers
    assert (STATIC_DIR / "vendor" / "uPlot.esm.js").is_file()


async def test_state_changes_need_the_sessions_csrf_token(console: Console) -> None:
    await console.login()
    alarm_id = raise_alarm(console.service)
    path = f"{console.base}/api/alarms/{alarm_id}/acknowledge"
    async with console.http.post(path, json={"reason": "at the bedside"}) as response:
        assert response.status == 403
    async with console.http.post(path, json={"reason": "x"}, headers={"X-CSRF-Token": "forged"}) as response:
        assert response.status == 403
    form = {"X-CSRF-Token": console.csrf, "Content-Type": "application/x-www-form-urlencoded"}
    async with console.http.post(path, data="reason=x", headers=form) as response:
        assert response.status == 415
    assert console.service.manager.get(alarm_id).state == "active"  # type: ignore[union-attr]
    async with console.http.post(
        path, json={"reason": "at the bedside"}, headers={"X-CSRF-Token": console.csrf}
    ) as response:
        assert response.status == 200, await response.text()
        assert (await response.json())["actor"] == "ann"
    record = console.service.store.alarm(alarm_id)
    assert record is not None
    assert record.state == "acknowledged"
    entries = console.service.store.audit_entries(alarm_id=alarm_id)
    assert [(e.action, e.actor, e.reason) for e in entries if e.action == "acknowledge"] == [
        ("acknowledge", "ann", "at the bedside")
    ]


async def test_a_session_ends_after_inactivity_and_user_input_keeps_it(console: Console) -> None:
    await console.login()
    console.clock.t += IDLE_S - 1
    async with console.http.post(
        console.base + "/api/activity", json={}, headers={"X-CSRF-Token": console.csrf}
    ) as response:
        assert response.status == 200
    console.clock.t += IDLE_S - 1
    async with console.http.get(console.base + "/api/board") as response:
        assert response.status == 200  # reading does not count as activity ...
    console.clock.t += 2
    async with console.http.get(console.base + "/api/board") as response:
        assert response.status == 401  # ... so the session is over here


async def test_audit_is_relayed_for_roles_that_may_read_it(console: Console) -> None:
    await console.login("ann")
    async with console.http.get(console.base + "/api/audit") as response:
        assert response.status == 403
    await console.login("cat")
    async with console.http.get(console.base + "/api/audit?limit=50") as response:
        assert response.status == 200
        actions = [e["action"] for e in (await response.json())["entries"]]
    assert "login" in actions


async def test_the_live_stream_is_relayed_and_ends_with_the_session(console: Console) -> None:
    await console.login()
    async with console.http.get(console.base + "/api/stream") as response:
        assert response.status == 200
        assert response.headers["Content-Type"] == "text/event-stream"
        seen: list[str] = []
        alarm_id = ""
        async for raw in response.content:
            line = raw.decode().strip()
            if line.startswith("event: "):
                seen.append(line[7:])
                if line == "event: snapshot":
                    alarm_id = raise_alarm(console.service, "p-7")
                elif line == "event: alarm":
                    console.clock.t += IDLE_S + 1  # nobody touched the page since
                elif line == "event: logout":
                    break
    assert seen == ["snapshot", "alarm", "logout"]
    assert alarm_id


async def test_trends_come_from_influxdb_with_the_read_only_user(tmp_path: Path) -> None:
    async with AsyncExitStack() as stack:
        influxd = await influx_with_a_reader(stack, tmp_path)
        now_ms = time.time_ns() // 1_000_000
        raw = "".join(
            f"vitals,device=ox-1,patient=p-1,signal=spo2,ward=ward-a value={95 - i % 3} {now_ms - i * 5000}\n"
            for i in range(60)
        )
        minutes = "".join(
            "vitals_1m,device=ox-1,patient=p-1,signal=heart_rate,ward=ward-a "
            f"mean={70 + i % 5},min=60,max=90,count=60i {now_ms - i * 60_000}\n"
            for i in range(600)
        )
        await write_as_admin(influxd, "raw", raw)
        await write_as_admin(influxd, "downsampled", minutes)
        console = await reader_console(stack, tmp_path, influxd)
        async with console.http.get(console.base + "/api/patients/p-1/trends?range=1h") as response:
            assert response.status == 200, await response.text()
            hour = await response.json()
        assert hour["source"] == "raw"
        assert set(hour["series"]) == {"spo2"}
        assert 25 <= len(hour["series"]["spo2"]) <= 61  # 10 s buckets over 5 minutes of 5 s samples
        async with console.http.get(console.base + "/api/patients/p-1/trends?range=24h") as response:
            day = await response.json()
        assert day["source"] == "downsampled"
        assert set(day["series"]) == {"heart_rate"}
        assert len(day["series"]["heart_rate"]) >= 100  # 5-minute buckets over 10 hours
        async with console.http.get(console.base + "/api/patients/p-1/trends?range=1y") as response:
            assert response.status == 400
        async with console.http.get(console.base + "/api/patients/DROP%20x/trends?range=1h") as response:
            assert response.status == 400


def test_the_example_config_loads() -> None:
    from wardwatch.core.config import load_config

    example = Path(__file__).resolve().parents[2] / "deploy" / "console" / "console.example.toml"
    config = load_config(ConsoleConfig, example, environ={"WARDWATCH_INFLUX__PASSWORD": "from-the-environment"})
    assert config.ward == "ward-a"
    assert config.influx.username == "reader"
    assert config.influx.password == Secret("from-the-environment")


async def test_notes_device_history_and_handover_are_relayed_with_csrf_on_the_write(console: Console) -> None:
    registry = console.service.registry
    patient = (await registry.admit("ward-a", "cat", "referred")).patient
    await console.login()
    path = console.base + f"/api/patients/{patient}/notes"
    async with console.http.post(path, json={"text": "Reviewed on video"}) as response:
        assert response.status == 403  # no CSRF token: refused by the console, nothing stored
    assert console.service.handover.notes.of_patient(patient, 10) == []
    headers = {"X-CSRF-Token": console.csrf}
    async with console.http.post(path, json={"text": "Reviewed on video"}, headers=headers) as response:
        assert response.status == 201, await response.text()
        assert (await response.json())["author"] == "ann"
    async with console.http.post(path, json={"text": " "}, headers=headers) as response:
        assert response.status == 400  # the API's check of the text comes through
    async with console.http.get(path) as response:
        assert [n["text"] for n in (await response.json())["notes"]] == ["Reviewed on video"]
    async with console.http.get(console.base + f"/api/patients/{patient}/devices") as response:
        assert (await response.json())["bindings"] == []
    async with console.http.get(console.base + "/api/handover?hours=4") as response:
        handover = await response.json()
    assert handover["until"] - handover["since"] == 4 * 3_600_000
    assert [n["text"] for n in handover["notes"]] == ["Reviewed on video"]
    async with console.http.get(console.base + "/api/patients/..%2F/notes") as response:
        assert response.status in (400, 404)


async def post_json(console: Console, path: str, body: Any, *, csrf: bool = True) -> tuple[int, Any]:
    headers = {"X-CSRF-Token": console.csrf} if csrf else {}
    async with console.http.post(console.base + path, json=body, headers=headers) as response:
        return response.status, await response.json()


async def test_threshold_edits_need_csrf_a_reason_and_the_apis_bounds_and_are_audited(console: Console) -> None:
    await console.login("cat")
    path = "/api/patients/p-1/thresholds"
    change = {"overrides": {"spo2_low": 88, "profile": "arrhythmia"}, "reason": "COPD: target 88-92 %"}
    assert (await post_json(console, path, change, csrf=False))[0] == 403
    status, answer = await post_json(console, path, {"overrides": {"spo2_low": 120}, "reason": "typo"})
    assert status == 400
    assert answer["error"] == "invalid thresholds: spo2_low: 120 is outside the allowed range 50..100"
    status, answer = await post_json(console, path, {"overrides": {"spo2_low": 88}, "reason": ""})
    assert status == 400  # a reason is required
    status, answer = await post_json(console, path, change)
    assert status == 200, answer
    assert (answer["effective"]["spo2_low"], answer["effective"]["hr_high"]) == (88, 140)  # the profile's 140
    async with console.http.get(console.base + path) as response:
        assert (await response.json())["overrides"] == {"spo2_low": 88, "profile": "arrhythmia"}
    entries = console.service.store.audit_entries(patient="p-1")
    (entry,) = [e for e in entries if e.action == "thresholds_set"]
    assert (entry.actor, entry.reason) == ("cat", "COPD: target 88-92 %")
    await console.login("ann")  # a nurse may read thresholds but not change them
    status, _ = await post_json(console, path, change)
    assert status == 403


async def test_the_forms_bounds_come_from_the_apis_openapi_document(console: Console) -> None:
    await console.login()
    async with console.http.get(console.base + "/api/forms") as response:
        assert response.status == 200
        forms = await response.json()
    respiration = next(o for o in forms["observation"]["respiration"]["anyOf"] if "maximum" in o)
    assert (respiration["minimum"], respiration["maximum"]) == (0, 80)
    assert (forms["thresholds"]["spo2_low"]["minimum"], forms["thresholds"]["spo2_low"]["maximum"]) == (50, 100)
    assert forms["thresholds"]["profile"]["enum"] == ["virtual-ward", "arrhythmia"]
    assert forms["reason"]["minLength"] == 1


async def test_observations_are_relayed_with_the_apis_checks_and_audited(console: Console) -> None:
    row = await console.service.registry.admit("ward-a", "cat", "referred", patient="p-9")
    await console.login("ann")
    path = f"/api/patients/{row.patient}/observations"
    taken = time.time_ns() // 1_000_000
    status, answer = await post_json(console, path, {"taken_at": taken, "respiration": 81})
    assert status == 422
    assert "respiration" in answer["error"]
    body = {"taken_at": taken, "respiration": 22, "consciousness": "A", "supplemental_o2": False}
    assert (await post_json(console, path, body, csrf=False))[0] == 403
    status, answer = await post_json(console, path, body)
    assert status == 201, answer
    assert answer["recorded_by"] == "ann"
    async with console.http.get(console.base + path) as response:
        (stored,) = (await response.json())["observations"]
    assert (stored["respiration"], stored["consciousness"]) == (22, "A")
    actions = [e.action for e in console.service.store.audit_entries(patient=row.patient)]
    assert "observation_recorded" in actions


async def test_a_patient_without_a_score_yet_has_no_news2_which_is_not_an_error(console: Console) -> None:
    # the browser logs every 404 as an error: a patient just admitted has no score yet, and that is an answer
    engine = Engine(RuleSet())
    console.service.observations.score_source = engine.score_now  # as the alerting app wires it
    row = await console.service.registry.admit("ward-a", "cat", "referred", patient="p-8")
    await console.login("ann")
    async with console.http.get(console.base + f"/api/patients/{row.patient}/news2") as response:
        assert response.status == 200
        assert await response.json() == {"patient": row.patient, "score": None}


async def test_news2_history_is_read_from_influxdb_with_the_read_only_user(tmp_path: Path) -> None:
    async with AsyncExitStack() as stack:
        influxd = await influx_with_a_reader(stack, tmp_path)
        now_ms = time.time_ns() // 1_000_000
        partial = 'news2,patient=p-1,ward=ward-a score={s}i,full=false,o2=0i,missing="respiration,consciousness" {t}\n'
        full = "news2,patient=p-1,ward=ward-a score={s}i,full=true,o2=0i {t}\n"
        lines = [partial.format(s=2 + i % 2, t=now_ms - 3 * 3600_000 + i * 60_000) for i in range(120)]
        lines += [full.format(s=6, t=now_ms - 20 * 60_000), full.format(s=8, t=now_ms - 5 * 60_000)]
        lines.append("news2,patient=p-2,ward=ward-a score=12i,full=true,o2=2i " + str(now_ms - 60_000) + "\n")
        await write_as_admin(influxd, "raw", "".join(lines))
        console = await reader_console(stack, tmp_path, influxd)
        async with console.http.get(console.base + "/api/patients/p-1/news2/history?range=1h") as response:
            assert response.status == 200, await response.text()
            hour = await response.json()
        assert [(p[1], p[2], p[3]) for p in hour["points"]] == [(6, True, []), (8, True, [])]
        async with console.http.get(console.base + "/api/patients/p-1/news2/history?range=24h") as response:
            day = await response.json()
        assert day["bucket"] == "5m"
        scores = [p[1] for p in day["points"]]
        assert max(scores) == 8  # the worst score of each 5 minutes; p-2's 12 is not here
        assert {tuple(p[3]) for p in day["points"] if not p[2]} == {("respiration", "consciousness")}
        assert 24 <= len(day["points"]) <= 27  # two hours of scores, then the full ones
        async with console.http.get(console.base + "/api/patients/p-1/news2/history?range=2d") as response:
            assert response.status == 400
