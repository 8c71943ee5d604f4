"""The prediction service's defences against what clients and the network do to it: paths that
would grow /metrics without bound, an online store that is down or empty, TLS 1.2 suites, one
client holding requests open, numbers past a float's range, error answers the OpenAPI document
must state, and a Redis password with any characters.

The served process is started as `shipdelay serve` starts it (`serving` from the service tests,
over the same copy of the `trained` world); what a server adds nothing to runs in process. Redis
is the local one (127.0.0.1:6379): database 7 for the empty store, 8 for the password test
(3 and up, one per test worker, are the feature-store tests'; 6 and 10-15 the stream tests'
and benchmarks').
"""

from __future__ import annotations

import collections
import json
import re
import socket
import ssl
from urllib.parse import quote

import pytest

from shipdelay.settings import get_settings
from tests.conftest import redis_or_skip
from tests.integration import test_service
from tests.integration.test_service import API_KEY, AS_OF, KEY, UNKNOWN_ID, serving
from tests.net import free_port

pytest.importorskip("bentoml")

world = test_service.world  # the service tests' copy of the trained world, and its environment
env = test_service.env

EMPTY_DB = 7
PASSWORD_DB = 8
CLIENT_LIMIT = 4  # requests one client address may have in flight in the served process
BODY_TIMEOUT_S = 3.0
CIPHER = "ECDHE-ECDSA-CHACHA20-POLY1305"  # what `--ssl-ciphers` asks for in the served process
ATTACKER = "127.0.0.2"  # another client address on the loopback network


# ------------------------------------------------------------- a served process, guarded
@pytest.fixture(scope="module")
def guarded(world, env, tmp_path_factory):
    """The service with a small per-client limit and body timeout, and one TLS 1.2 suite asked
    for through `serve_command`'s `ssl_ciphers` (the `--ssl-ciphers` option)."""
    settings = get_settings().model_copy(update={"serve_client_concurrency": CLIENT_LIMIT,
                                                 "serve_body_timeout_s": BODY_TIMEOUT_S})
    with serving(settings, tmp_path_factory.mktemp("guarded"), ssl_ciphers=CIPHER) as s:
        yield s


@pytest.fixture(scope="module")
def unreachable(world, env, tmp_path_factory):
    """The service with every setting at its default, its online store a Redis address where
    nothing listens: alive, never ready."""
    settings = get_settings().model_copy(update={
        "online_store": "redis", "redis_url": f"redis://127.0.0.1:{free_port()}/0"})
    with serving(settings, tmp_path_factory.mktemp("unreachable"), wait_for="/livez") as s:
        yield s


def _tls12(served, ciphers: str | None = None) -> tuple[str, str] | None:
    """(cipher, protocol) a TLS 1.2 client offering `ciphers` (default: Python's) negotiates
    with `served`, None when the server refuses every suite offered."""
    context = ssl.create_default_context(cafile=str(served.cert))
    context.maximum_version = ssl.TLSVersion.TLSv1_2
    if ciphers:
        context.set_ciphers(ciphers)
    try:
        with socket.create_connection(("127.0.0.1", served.port), timeout=10) as raw, \
                context.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
            name, protocol, _ = tls.cipher()
            return name, protocol
    except (ssl.SSLError, ConnectionResetError):
        return None


def _aead(name: str) -> bool:
    return "GCM" in name or "CHACHA20-POLY1305" in name


@pytest.mark.slow
def test_tls12_offers_aead_suites_by_default(unreachable):
    cipher, protocol = _tls12(unreachable)
    assert protocol == "TLSv1.2" and _aead(cipher) and cipher.startswith("ECDHE"), cipher
    # the CBC suites with SHA-1 that BentoML offers by default are not offered at all
    assert _tls12(unreachable, "ECDHE-ECDSA-AES128-SHA:ECDHE-ECDSA-AES256-SHA") is None


@pytest.mark.slow
def test_ssl_ciphers_option_chooses_the_suite(guarded):
    assert _tls12(guarded) == (CIPHER, "TLSv1.2")  # what the client prefers is not offered
    assert _tls12(guarded, "ECDHE-ECDSA-AES128-GCM-SHA256") is None


@pytest.mark.slow
def test_unknown_paths_share_one_metrics_label(guarded):
    """Hundreds of distinct unknown paths, with and without the key, add a handful of series to
    /metrics (labelled "other"), not hundreds."""
    before = guarded.http.get("/metrics").text
    for i in range(300):
        headers = KEY if i % 2 else {"X-API-Key": ""}
        r = guarded.http.get(f"/probe-{i}/x", headers=headers)
        assert r.status_code in (401, 404)
    after = guarded.http.get("/metrics").text
    assert "/probe-" not in after
    endpoints = set(re.findall(r'endpoint="([^"]*)"', after))
    assert "other" in endpoints and len(endpoints) <= 10, endpoints
    assert len(after) - len(before) < 30_000, (len(before), len(after))


@pytest.mark.slow
def test_one_client_holding_requests_open_does_not_lock_others_out(guarded, world):
    """70 requests from one address whose bodies never finish (more than the service's 64
    slots): that client gets 429 beyond its limit and 408 for the ones it holds; another
    client is answered meanwhile."""
    context = ssl.create_default_context(cafile=str(guarded.cert))
    held = []
    try:
        for _ in range(70):
            raw = socket.create_connection(("127.0.0.1", guarded.port), timeout=30,
                                           source_address=(ATTACKER, 0))
            tls = context.wrap_socket(raw, server_hostname="127.0.0.1")
            held.append(tls)
            tls.sendall(b"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: "
                        b"application/json\r\nX-API-Key: " + API_KEY.encode() +
                        b"\r\nContent-Length: 100\r\n\r\n{\"shipment_ids\": [")
        r = guarded.http.post("/predict", json={"shipment_ids": world.live[:1]})
        assert r.status_code == 200 and r.json()[0]["ok"], r.text
        statuses = collections.Counter()
        for tls in held:
            head = tls.recv(4096)  # the 408s come after the body timeout
            statuses[head.split(b" ")[1].decode() if head else "closed"] += 1
    finally:
        for tls in held:
            tls.close()
    assert statuses == {"429": 70 - CLIENT_LIMIT, "408": CLIENT_LIMIT}, statuses
    metrics = guarded.http.get("/metrics").text
    assert 'shipdelay_rejected_requests_total{reason="client_limit"}' in metrics
    assert 'shipdelay_rejected_requests_total{reason="body_timeout"}' in metrics


def _documented(doc: dict, path: str, status: int) -> dict:
    """The JSON schema `doc` gives for `status` answers of POST `path` (with its components)."""
    responses = doc["paths"][path]["post"]["responses"]
    answer = responses.get(str(status)) or responses.get(status)
    assert answer is not None, f"{status} of {path} is not documented"
    return {**answer["content"]["application/json"]["schema"],
            "components": doc["components"]}


@pytest.mark.slow
def test_error_answers_are_the_documented_ones(guarded, world):
    """Real error answers validate against the schemas the served /docs.json states."""
    from jsonschema import Draft202012Validator

    from features.schema import CATEGORICAL, TEXT_FEATURES, model_feature_names

    doc = guarded.http.get("/docs.json").json()
    row = {f: ("truck" if f in {*CATEGORICAL, *TEXT_FEATURES} else 1.0) for f in model_feature_names()}
    huge = json.dumps({"rows": [row]}).replace('"slip_h": 1.0', '"slip_h": 1' + "0" * 309)
    assert "0" * 309 in huge
    json_body = {"content-type": "application/json"}
    cases = [  # (path, body, headers, status expected)
        ("/predict", '{"shipment_ids": []}', json_body, 400),
        ("/predict", '{"shipment_ids": ["a",', json_body, 400),
        ("/predict", '{"ids": ["a"]}', json_body, 400),
        ("/predict_features", '{"rows": [{"slip_h": 1.0}]}', json_body, 400),
        ("/predict_features", huge, json_body, 400),  # an integer past a float's range
        ("/predict", '{"shipment_ids": ["a"]}', {**json_body, "X-API-Key": "wrong"}, 401),
        ("/predict", b"x" * 1_000_001, json_body, 413),
        ("/predict", "{}", {"content-type": "text/plain"}, 415),
    ]
    for path, body, headers, status in cases:
        r = guarded.http.post(path, content=body, headers=headers)
        assert r.status_code == status, (path, body[:60], r.text)
        errors = list(Draft202012Validator(_documented(doc, path, status)).iter_errors(r.json()))
        assert not errors, (path, status, r.json(), [e.message for e in errors])
        if status == 400:
            assert r.json()["detail"][0]["loc"] is not None
    r = guarded.http.post("/predict_features", content=huge, headers=json_body)
    assert "slip_h must be a finite number" in r.text  # names the field


# ------------------------------------------------------------ the online store down or empty
@pytest.mark.slow
def test_unreachable_redis_is_a_per_item_error_and_not_ready(unreachable, world):
    """Nothing listens on the port: each item says so at once (not BentoML's 504 after its 10 s
    timeout, which redis-py's default backoff used to reach) and /readyz says not ready."""
    r = unreachable.http.post("/predict", json={"shipment_ids": [world.live[0], UNKNOWN_ID]})
    assert r.status_code == 200, r.text
    assert [(i["ok"], i["error"]) for i in r.json()] == \
        [(False, "feature store unavailable")] * 2
    assert unreachable.http.get("/readyz").status_code == 503
    metrics = unreachable.http.get("/metrics").text
    assert 'shipdelay_predictions_total{outcome="features_unavailable",route="predict"}' in metrics


@pytest.fixture
def service_over(world, env, monkeypatch):
    """`make(redis_url, online_read)`: the service class over that Redis, in process."""
    from serving.service import ShipDelay

    def make(redis_url: str, online_read: str = "direct"):
        monkeypatch.setenv("SHIPDELAY_ONLINE_STORE", "redis")
        monkeypatch.setenv("SHIPDELAY_REDIS_URL", redis_url)
        monkeypatch.setenv("SHIPDELAY_ONLINE_READ", online_read)
        get_settings.cache_clear()
        return ShipDelay()

    yield make
    get_settings.cache_clear()


def test_unreachable_redis_through_feast_is_a_per_item_error(service_over, world):
    """The reference read (Feast's `get_online_features`) uses the same bounded client."""
    service = service_over(f"redis://127.0.0.1:{free_port()}/0", "feast")
    assert service.reader is None
    client = service.store._get_provider().online_store._get_client(
        service.store.config.online_store)
    assert client.get_connection_kwargs()["socket_connect_timeout"] == 0.5
    assert client.get_retry().get_retries() == 1
    item, = service.predict(world.live[:1])
    assert (item.ok, item.error) == (False, "feature store unavailable")
    assert not service.__is_ready__()
    assert "online store" in service.not_ready_because


def test_empty_redis_is_not_ready_until_rows_are_written(service_over, world):
    from features.online_direct import SqliteOnline, open_direct
    from features.store import repo_config

    redis_or_skip(EMPTY_DB)
    try:
        service = service_over(f"redis://127.0.0.1:6379/{EMPTY_DB}")
        assert service.reader is not None
        assert not service.__is_ready__()  # reachable, but nothing materialized
        assert "holds no shipment rows" in service.not_ready_because
        # a few shipments' progress, read from the world's SQLite store, written as the stream
        # scorer writes it (Feast's own layout)
        sqlite = SqliteOnline(repo_config(world.settings).online_store.path)
        progress = sqlite.read("shipment_progress", world.live[:3])
        sqlite.close()
        assert progress["found"].all()
        direct = open_direct(get_settings())
        direct.write("shipment_progress", progress.assign(event_timestamp=AS_OF))
        direct.close()
        assert service.__is_ready__()
        assert service.not_ready_because is None
    finally:
        redis_or_skip(EMPTY_DB)


# ------------------------------------------------------------- a password with any characters
def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value


def test_redis_password_with_commas_and_percents_reaches_redis(tmp_path):
    """A real Redis user whose password holds ",", "%" and other URL characters, given
    percent-encoded in `redis_url`: Feast's own online store object and the direct reader both
    log in as that user; the wrong password is refused, so the password is really checked."""
    import redis
    from feast.infra.online_stores.helpers import get_online_store_from_config

    from features.online_direct import open_direct
    from features.store import repo_config
    from shipdelay.settings import Settings

    admin = redis_or_skip(PASSWORD_DB, flush=False)
    user = f"shipdelay-test-{tmp_path.name}"
    password = 'p,w%d=1%25"x@y/z:,password=0'
    admin.acl_setuser(user, enabled=True, passwords=[f"+{password}"], keys=["*"],
                      commands=["+@all"])
    try:
        def settings(secret: str) -> Settings:
            url = (f"redis://{quote(user, safe='')}:{quote(secret, safe='')}@127.0.0.1:6379/"
                   f"{PASSWORD_DB}")
            return Settings(data_dir=tmp_path / "data", online_store="redis", redis_url=url)

        config = repo_config(settings(password)).online_store
        assert password not in config.connection_string  # what Feast shows of the store
        feast_client = get_online_store_from_config(config)._get_client(config)
        assert _text(feast_client.acl_whoami()) == user
        direct = open_direct(settings(password))
        assert _text(direct.client.acl_whoami()) == user
        direct.close()
        from features.store import redis_client

        wrong = repo_config(settings(password[:-1])).online_store
        with pytest.raises(redis.exceptions.AuthenticationError):
            redis_client(wrong).ping()
    finally:
        admin.acl_deluser(user)
