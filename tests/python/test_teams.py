"""Teams (issue 14, item 5): API keys belong to teams, and a key sees only its team's sandboxes,
snapshots, templates and builds. Another team's object answers 404 exactly as a missing one does; the
admin routes refuse ordinary keys; failed-key bursts are rate limited per client address. Driven by
the official SDKs against a real server and real sandboxes."""

from __future__ import annotations

import json
import subprocess
import time
import uuid
from typing import Dict, List

import httpx
import pytest

from novita_sandbox.core import Sandbox, Template
from novita_sandbox.core.exceptions import (
    AuthenticationException,
    RateLimitException,
    SandboxException,
    SandboxNotFoundException,
)
from novita_sandbox.core.sandbox.sandbox_api import SandboxQuery

from server_harness import Server, arbor_binary, start_server

e2b = pytest.importorskip("e2b")

MISSING = "doesnotexist000000000"


@pytest.fixture(scope="module")
def server():
    srv = start_server(pause_grace=0)
    yield srv
    srv.teardown()


def client(server: Server, key: str, local: str | None = None) -> httpx.Client:
    transport = httpx.HTTPTransport(local_address=local) if local else None
    return httpx.Client(base_url=server.url, headers={"X-API-KEY": key}, timeout=60, transport=transport)


def opts_for(server: Server, key: str) -> dict:
    return {**server.sdk_opts(), "api_key": key}


@pytest.fixture(scope="module")
def teams(server: Server) -> Dict[str, dict]:
    """Two teams made by the server's own (admin) key, each with a member key."""
    made = {}
    with server.api() as admin:
        for name in ("team-a", "team-b"):
            team = admin.post("/admin/teams", json={"name": name})
            assert team.status_code == 201, team.text
            team = team.json()
            key = admin.post(f"/admin/teams/{team['teamID']}/api-keys", json={"name": f"{name}-key"})
            assert key.status_code == 201, key.text
            made[name] = {**team, "key": key.json()["key"], "keyID": key.json()["id"]}
    return made


@pytest.fixture(scope="module")
def a(server, teams) -> dict:
    return {**teams["team-a"], "opts": opts_for(server, teams["team-a"]["key"])}


@pytest.fixture(scope="module")
def b(server, teams) -> dict:
    return {**teams["team-b"], "opts": opts_for(server, teams["team-b"]["key"])}


@pytest.fixture
def made(server):
    """Sandboxes a test creates, each with the key that made it, killed after the test."""
    sandboxes: List[tuple] = []
    yield sandboxes
    for sandbox_id, opts in sandboxes:
        Sandbox.kill(sandbox_id, **opts)


def listed_ids(opts: dict) -> set:
    pages = Sandbox.list(query=SandboxQuery(), limit=100, **opts)
    ids = set()
    while pages.has_next:
        ids |= {s.sandbox_id for s in pages.next_items()}
    return ids


def snapshot_ids(opts: dict, **kw) -> List[str]:
    pages = Sandbox.list_snapshots(**kw, **opts)
    found: List[str] = []
    while pages.has_next:
        found += [s.snapshot_id for s in pages.next_items()]
    return found


def same_404(other: httpx.Response, missing: httpx.Response, other_id: str) -> None:
    """Another team's object and a missing one get the same answer: status, shape and message."""
    assert other.status_code == missing.status_code == 404, (other.status_code, other.text, missing.text)
    assert set(other.json()) == set(missing.json()) == {"code", "message"}
    assert other.json()["code"] == 404
    assert other.json()["message"].replace(other_id, "ID") == missing.json()["message"].replace(MISSING, "ID")


def test_admin_makes_teams_and_keys_and_get_teams_answers_the_keys_team(server, teams):
    with server.api() as admin:
        listed = {t["name"]: t["teamID"] for t in admin.get("/admin/teams").json()}
        assert listed["default"] == "default"
        assert listed["team-a"] == teams["team-a"]["teamID"] and listed["team-b"] == teams["team-b"]["teamID"]
        dup = admin.post("/admin/teams", json={"name": "team-a"})
        assert dup.status_code == 409 and dup.json()["code"] == 409
        bad = admin.post("/admin/teams", json={"name": ""})
        assert bad.status_code == 400 and bad.json()["code"] == 400
        keys = admin.get(f"/admin/teams/{teams['team-a']['teamID']}/api-keys").json()
        assert [k["id"] for k in keys] == [teams["team-a"]["keyID"]]
        assert keys[0]["teamID"] == teams["team-a"]["teamID"] and keys[0]["admin"] is False
        assert "key" not in keys[0], "a listed key never shows its secret"
        unknown = admin.get("/admin/teams/no-such-team/api-keys")
        assert unknown.status_code == 404 and unknown.json()["code"] == 404
        mine = admin.get("/teams").json()
        assert mine == [{"teamID": "default", "name": "default", "apiKey": server.key, "isDefault": True}]
    for name, team in teams.items():
        with client(server, team["key"]) as api:
            got = api.get("/teams")
            assert got.status_code == 200
            assert got.json() == [{"teamID": team["teamID"], "name": name, "apiKey": team["key"], "isDefault": True}]


def test_admin_routes_refuse_an_ordinary_key(server, b):
    with client(server, b["key"]) as api:
        for method, path, body in [
            ("GET", "/admin/teams", None),
            ("POST", "/admin/teams", {"name": "sneaky"}),
            ("GET", f"/admin/teams/{b['teamID']}/api-keys", None),
            ("POST", f"/admin/teams/{b['teamID']}/api-keys", {"name": "more", "admin": True}),
            ("DELETE", f"/admin/teams/{b['teamID']}/api-keys/{b['keyID']}", None),
        ]:
            res = api.request(method, path, json=body)
            assert res.status_code == 403, (method, path, res.text)
            assert res.json() == {"code": 403, "message": "this route needs an admin API key"}
    with server.api() as admin:
        assert "sneaky" not in {t["name"] for t in admin.get("/admin/teams").json()}


def test_a_key_revoked_through_the_api_stops_at_once(server, b):
    with server.api() as admin:
        extra = admin.post(f"/admin/teams/{b['teamID']}/api-keys", json={"name": "short-lived"}).json()
        with client(server, extra["key"]) as api:
            assert api.get("/teams").status_code == 200
            done = admin.delete(f"/admin/teams/{b['teamID']}/api-keys/{extra['id']}")
            assert done.status_code == 204
            assert api.get("/teams").status_code == 401, "not even the key cache keeps it"
        again = admin.delete(f"/admin/teams/{b['teamID']}/api-keys/{extra['id']}")
        assert again.status_code == 404
        # A key id of another team is not this team's to revoke.
        other = admin.delete(f"/admin/teams/default/api-keys/{b['keyID']}")
        assert other.status_code == 404
    with client(server, b["key"]) as api:
        assert api.get("/teams").status_code == 200


def test_another_teams_sandbox_is_invisible_and_untouchable(server, a, b, made):
    sbx = Sandbox.create(timeout=300, metadata={"owner": "a"}, **a["opts"])
    made.append((sbx.sandbox_id, a["opts"]))
    sid = sbx.sandbox_id
    with client(server, a["key"]) as api_a:
        detail = api_a.get(f"/sandboxes/{sid}").json()
    token = detail["envdAccessToken"]
    assert token and detail["teamID"] == a["teamID"]
    mine = Sandbox.create(timeout=300, **b["opts"])
    made.append((mine.sandbox_id, b["opts"]))
    default_own = Sandbox.create(timeout=300, **server.sdk_opts())
    made.append((default_own.sandbox_id, server.sdk_opts()))

    # Lists show the team's own sandboxes only.
    assert sid in listed_ids(a["opts"]) and mine.sandbox_id not in listed_ids(a["opts"])
    assert listed_ids(b["opts"]) == {mine.sandbox_id}
    assert sid not in listed_ids(server.sdk_opts()), "the default team is a team like any other"
    assert default_own.sandbox_id in listed_ids(server.sdk_opts())
    assert Sandbox.list(query=SandboxQuery(metadata={"owner": "a"}), **b["opts"]).next_items() == []

    # Every SDK call of team B on A's sandbox: not found, as for an id that does not exist.
    for call in (
        lambda o: Sandbox.connect(sid, **o),
        lambda o: Sandbox.get_info(sid, **o),
        lambda o: Sandbox.set_timeout(sid, 30, **o),
        lambda o: Sandbox.beta_pause(sid, **o),
        lambda o: Sandbox.clone(sid, 1, **o),
        lambda o: Sandbox.create_snapshot(sid, **o),
    ):
        with pytest.raises(SandboxNotFoundException):
            call(b["opts"])
    with pytest.raises(SandboxException, match="404"):
        Sandbox.get_metrics(sid, **b["opts"])
    assert Sandbox.kill(sid, **b["opts"]) is False
    # The e2b SDK sees the same.
    e2b_opts = {"api_key": b["key"], "api_url": server.url, "sandbox_url": server.url}
    with pytest.raises(e2b.NotFoundException):
        e2b.Sandbox.connect(sid, **e2b_opts)
    assert e2b.Sandbox.kill(sid, **e2b_opts) is False
    assert sid not in {s.sandbox_id for s in e2b.Sandbox.list(**e2b_opts).next_items()}

    # Byte for byte the answer a missing id gets, on every route that takes a sandbox id.
    seen: List[str] = []
    with client(server, b["key"]) as api_b:
        for method, path, body in [
            ("GET", "/sandboxes/{}", None),
            ("DELETE", "/sandboxes/{}", None),
            ("POST", "/sandboxes/{}/timeout", {"timeout": 30}),
            ("POST", "/sandboxes/{}/connect", {"timeout": 30}),
            ("POST", "/v2/sandboxes/{}/connect", {"timeout": 30}),
            ("POST", "/sandboxes/{}/resume", {"timeout": 30}),
            ("POST", "/sandboxes/{}/pause", None),
            ("GET", "/sandboxes/{}/metrics", None),
            ("PUT", "/sandboxes/{}/network", {"allowOut": ["1.1.1.1"]}),
            ("POST", "/sandboxes/{}/snapshots", {}),
            ("POST", "/sandboxes/{}/clone", {"count": 1}),
            ("POST", "/sandboxes/{}/fork", {"count": 1}),
            ("POST", "/sandboxes/{}/refreshes", None),
        ]:
            other = api_b.request(method, path.format(sid), json=body)
            missing = api_b.request(method, path.format(MISSING), json=body)
            same_404(other, missing, sid)
            seen.append(other.text)
        for path in ("/v2/sandboxes?state=running,paused", "/sandboxes", "/snapshots"):
            listed = api_b.get(path)
            assert listed.status_code == 200 and sid not in listed.text
            seen.append(listed.text)
        quota = api_b.get("/sandboxes/quota").json()
        assert quota["usage"]["concurrentInstances"] == 1, "B's usage counts B's sandbox only"
    assert not any(token in text for text in seen), "team B never sees A's envd access token"

    # A's sandbox was not touched by any of it.
    info = Sandbox.get_info(sid, **a["opts"])
    assert info.state.value == "running" and info.metadata == {"owner": "a"}
    assert sbx.commands.run("echo still mine").stdout == "still mine\n"
    assert Sandbox.kill(sid, **a["opts"]) is True


def test_pause_and_resume_of_another_teams_sandbox(server, a, b, made):
    sbx = Sandbox.create(timeout=300, **a["opts"])
    made.append((sbx.sandbox_id, a["opts"]))
    sbx.files.write("/home/user/a.txt", "kept\n")
    sbx.beta_pause()
    with pytest.raises(SandboxNotFoundException):
        Sandbox.connect(sbx.sandbox_id, **b["opts"])
    with client(server, b["key"]) as api_b:
        same_404(
            api_b.post(f"/sandboxes/{sbx.sandbox_id}/resume", json={}),
            api_b.post(f"/sandboxes/{MISSING}/resume", json={}),
            sbx.sandbox_id,
        )
    assert Sandbox.get_info(sbx.sandbox_id, **a["opts"]).state.value == "paused", "B's resume did nothing"
    resumed = Sandbox.connect(sbx.sandbox_id, **a["opts"])
    assert resumed.files.read("/home/user/a.txt") == "kept\n"


def test_snapshots_belong_to_the_origins_team(server, a, b, made):
    origin = Sandbox.create(timeout=300, **a["opts"])
    made.append((origin.sandbox_id, a["opts"]))
    origin.files.write("/home/user/snap.txt", "from a snapshot of A\n")
    snap = Sandbox.create_snapshot(origin.sandbox_id, **a["opts"])
    assert snap.snapshot_id in snapshot_ids(a["opts"])
    assert snapshot_ids(b["opts"]) == []
    assert snapshot_ids(b["opts"], sandbox_id=origin.sandbox_id) == []
    # By name too (a snapshot's name is its id unless given one).
    for team, want in ((a, [snap.snapshot_id]), (b, [])):
        with client(server, team["key"]) as api:
            named = api.get("/snapshots", params={"name": snap.snapshot_id}).json()
            assert [s["snapshotID"] for s in named] == want
    # B can neither start from it, nor build on it, nor delete it.
    with pytest.raises(SandboxException, match="404"):
        Sandbox.create(template=snap.snapshot_id, timeout=60, **b["opts"])
    assert Sandbox.delete_snapshot(snap.snapshot_id, **b["opts"]) is False
    assert Template.delete(snap.snapshot_id, **b["opts"]) is False
    with client(server, b["key"]) as api_b:
        same_404(
            api_b.delete(f"/templates/{snap.snapshot_id}"), api_b.delete(f"/templates/{MISSING}"), snap.snapshot_id
        )
    # A can: a sandbox from the snapshot is A's, and so are its clones and their snapshot.
    child = Sandbox.create(template=snap.snapshot_id, timeout=120, **a["opts"])
    made.append((child.sandbox_id, a["opts"]))
    assert child.files.read("/home/user/snap.txt") == "from a snapshot of A\n"
    clones = Sandbox.clone(child.sandbox_id, 1, **a["opts"])
    made.extend((c.sandbox_id, a["opts"]) for c in clones)
    assert {child.sandbox_id, clones[0].sandbox_id} <= listed_ids(a["opts"])
    assert not ({child.sandbox_id, clones[0].sandbox_id} & listed_ids(b["opts"]))
    with client(server, a["key"]) as api_a:
        assert api_a.get(f"/sandboxes/{clones[0].sandbox_id}").json()["teamID"] == a["teamID"]
    Sandbox.kill(child.sandbox_id, **a["opts"])
    assert Sandbox.delete_snapshot(snap.snapshot_id, **a["opts"]) is True


def test_templates_belong_to_their_team_and_builtins_to_everyone(server, a, b, made, tmp_path):
    name = f"shared-{uuid.uuid4().hex[:8]}"
    api_opts = lambda team: {k: v for k, v in team["opts"].items() if k in ("api_url", "api_key")}  # noqa: E731
    built_a = Template.build(
        Template().from_template("base").run_cmd("echo built-by-a > /opt/who"), alias=name, **api_opts(a)
    )
    assert Template.exists(name, **api_opts(a)) is True
    assert Template.exists(name, **api_opts(b)) is False
    with pytest.raises(SandboxException, match="404"):
        Sandbox.create(template=name, timeout=60, **b["opts"])
    with client(server, b["key"]) as api_b, client(server, a["key"]) as api_a:
        tid, bid = built_a.template_id, built_a.build_id
        for method, path in [
            ("GET", "/templates/{}"),
            ("GET", "/templates/{}/builds/" + bid + "/status"),
            ("POST", "/v2/templates/{}/builds/" + bid),
        ]:
            body = {"fromTemplate": "base", "steps": []} if method == "POST" else None
            same_404(api_b.request(method, path.format(tid), json=body), api_b.request(method, path.format(MISSING), json=body), tid)
        assert api_b.get(f"/templates/{name}").status_code == 404
        assert name not in api_b.get("/templates").text
        assert api_b.get("/templates", params={"teamID": a["teamID"]}).status_code == 404
        listed_a = [t for t in api_a.get("/templates").json() if t.get("name") == name]
        assert [t["teamID"] for t in listed_a] == [a["teamID"]]
        # Built-in templates are every team's to use, no team's to delete or rebuild.
        assert "base" in {t["templateID"] for t in api_b.get("/templates").json()}
        assert api_b.get("/templates/aliases/base").json()["public"] is True
        forbidden = api_b.delete("/templates/base")
        assert forbidden.status_code == 403 and forbidden.json()["code"] == 403
        taken = api_b.post("/v3/templates", json={"name": "base"})
        assert taken.status_code == 400 and taken.json()["code"] == 400
    assert Template.delete(tid, **api_opts(b)) is False
    assert Template.delete(name, **api_opts(b)) is False

    # The same name in team B is B's own template; A's is untouched.
    built_b = Template.build(
        Template().from_template("base").run_cmd("echo built-by-b > /opt/who"), alias=name, **api_opts(b)
    )
    assert built_b.template_id != built_a.template_id
    for team, who in ((a, "built-by-a"), (b, "built-by-b")):
        sbx = Sandbox.create(template=name, timeout=60, **team["opts"])
        made.append((sbx.sandbox_id, team["opts"]))
        assert sbx.commands.run("cat /opt/who").stdout == f"{who}\n"
        Sandbox.kill(sbx.sandbox_id, **team["opts"])
    assert Template.delete(name, **api_opts(b)) is True
    assert Template.exists(name, **api_opts(a)) is True
    assert Template.delete(name, **api_opts(a)) is True


def test_the_cli_manages_teams_and_keys_in_the_store(server):
    data = str(server.base / "data")

    def cli(*args: str) -> str:
        res = subprocess.run([str(arbor_binary()), *args, "--data-dir", data], capture_output=True, text=True)
        assert res.returncode == 0, res.stderr
        return res.stdout

    team_id = cli("teams", "create", "cli-team").strip()
    assert {"teamID": team_id, "name": "cli-team"}.items() <= {
        k: v for t in json.loads(cli("teams", "list", "--json")) if t["name"] == "cli-team" for k, v in t.items()
    }.items()
    key = json.loads(cli("keys", "create", "--team", "cli-team", "--name", "ops", "--json"))
    assert key["teamID"] == team_id and key["admin"] is False
    with client(server, key["key"]) as api:
        assert api.get("/teams").json()[0]["teamID"] == team_id
        assert api.get("/admin/teams").status_code == 403
    listed = json.loads(cli("keys", "list", "--team", team_id, "--json"))
    assert [k["id"] for k in listed] == [key["id"]]
    admin = json.loads(cli("keys", "create", "--team", "cli-team", "--admin", "--json"))
    with client(server, admin["key"]) as api:
        assert api.get("/admin/teams").status_code == 200
    table = cli("keys", "list")
    assert "cli-team" in table and "admin" in table


def drain(wrong: httpx.Client) -> tuple:
    """Wrong keys until the first 429: (how many were 401 before it, the 429, seconds it took)."""
    began, refused = time.monotonic(), 0
    for _ in range(100):
        res = wrong.get("/v2/sandboxes")
        if res.status_code == 429:
            return refused, res, time.monotonic() - began
        assert res.status_code == 401, res.text
        refused += 1
    raise AssertionError("100 wrong keys and no 429")


def test_failed_key_bursts_are_rate_limited_per_address(server, a):
    # A valid key verified just now (cached) is not slowed by the burst that follows.
    with client(server, a["key"]) as valid, client(server, "arbor_" + "0" * 64) as wrong:
        assert valid.get("/teams").status_code == 200
        refused, limited, took = drain(wrong)
        # A burst of 20, plus the 2 a second that came back meanwhile.
        assert 20 <= refused <= 20 + 2 * took + 1, (refused, took)
        assert limited.json()["code"] == 429 and "retry" in limited.json()["message"], limited.text
        retry_after = int(limited.headers["retry-after"])
        assert retry_after == 1
        assert [wrong.get("/v2/sandboxes").status_code for _ in range(5)] == [429] * 5
        assert valid.get("/teams").status_code == 200, "a verified key keeps working"
        # The SDK sees a rate limit, not a wrong key.
        drain(wrong)
        with pytest.raises(RateLimitException):
            Sandbox.list(**{**a["opts"], "api_key": "wrong-key"}).next_items()
    # Another address has its own budget: a right key works there, a wrong one is a plain 401.
    with client(server, a["key"], local="127.0.0.2") as elsewhere:
        assert elsewhere.get("/teams").status_code == 200
    with client(server, "wrong-key-elsewhere", local="127.0.0.2") as elsewhere:
        assert elsewhere.get("/teams").status_code == 401
    # After the window, the limited address may try again.
    time.sleep(retry_after + 0.1)
    with client(server, a["key"] + "x") as wrong:
        assert wrong.get("/teams").status_code == 401
    with pytest.raises(AuthenticationException):
        Sandbox.list(**{**a["opts"], "api_key": "wrong-key"}).next_items()
    time.sleep(1.1)
    with client(server, server.key) as api:
        assert api.get("/teams").status_code == 200
