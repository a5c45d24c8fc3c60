"""Parsing of credentials and TLS settings: ZkAuth, Redis URLs, node config keys."""

from __future__ import annotations

import importlib.util

import pytest

import coord
from coord._redis_url import make_client, parse_sentinel_url, redis_failure
from node import ConfigError, load_config


def test_zk_auth_parses_and_hides_the_password() -> None:
    auth = coord.ZkAuth.parse("digest:node:pa:ss")
    assert (auth.scheme, auth.user, auth.password) == ("digest", "node", "pa:ss")
    assert "pa:ss" not in repr(auth)
    kw = auth.kazoo_kwargs()
    assert kw["auth_data"] == [("digest", "node:pa:ss")]
    (acl,) = kw["default_acl"]
    assert acl.id.scheme == "digest" and acl.id.id.startswith("node:") and acl.perms == 31
    assert "pa:ss" not in acl.id.id  # a salted hash, not the password


@pytest.mark.parametrize("bad", ["", "digest", "digest:user", "digest::pw", "ip:1.2.3.4:x"])
def test_bad_zk_auth_is_refused_without_echoing_it(bad: str) -> None:
    with pytest.raises(ValueError) as info:
        coord.ZkAuth.parse(bad)
    assert "pw" not in str(info.value) or bad == "ip:1.2.3.4:x"


def test_sasl_without_pure_sasl_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "puresasl" else real(name, *a)
    )
    with pytest.raises(ValueError, match="pure-sasl"):
        coord.ZkAuth.parse("sasl:u:p").kazoo_kwargs()


def test_tls_files_need_cert_and_key_together() -> None:
    with pytest.raises(ValueError):
        coord.TlsFiles("ca.pem", cert="c.pem")


def test_sentinel_url_with_user_password_and_tls() -> None:
    s = parse_sentinel_url(
        "rediss+sentinel://us%40er:p%3Aw@a:26379,b:1/mymaster/3?ssl_ca_certs=/ca.pem"
    )
    assert (s.username, s.password, s.db, s.service) == ("us@er", "p:w", 3, "mymaster")
    assert s.tls and dict(s.tls_params) == {"ssl_ca_certs": "/ca.pem"}
    assert "p:w" not in repr(s)
    with pytest.raises(ValueError, match="rediss"):
        parse_sentinel_url("redis+sentinel://a:1/m?ssl_ca_certs=/ca.pem")
    with pytest.raises(ValueError, match="unsupported"):
        parse_sentinel_url("rediss+sentinel://a:1/m?foo=1")


def test_sentinel_client_sends_credentials_and_tls_to_sentinels_and_master() -> None:
    r = make_client(
        "rediss+sentinel://u:pw@a:26379/m/0",
        coord.TlsFiles("/ca.pem", "/c.pem", "/k.pem"),
    )
    pool = r.connection_pool
    for conn_kw in (pool.connection_kwargs, pool.sentinel_manager.sentinel_kwargs):
        assert conn_kw["username"] == "u" and conn_kw["password"] == "pw"
        assert conn_kw["ssl_ca_certs"] == "/ca.pem" and conn_kw["ssl_keyfile"] == "/k.pem"
    assert pool.connection_class.__name__ == "SentinelManagedSSLConnection"
    sentinel_pool = pool.sentinel_manager.sentinels[0].connection_pool
    assert sentinel_pool.connection_kwargs["password"] == "pw"
    assert sentinel_pool.connection_class.__name__ == "SSLConnection"


def test_tls_files_with_a_plain_url_are_refused() -> None:
    with pytest.raises(ValueError, match="rediss://"):
        make_client("redis://h:1/0", coord.TlsFiles("/ca.pem"))
    with pytest.raises(ValueError, match="rediss"):
        make_client("redis+sentinel://h:1/m", coord.TlsFiles("/ca.pem"))


def test_redis_failure_classifies_refusals_only() -> None:
    import ssl

    import redis

    assert redis_failure(redis.ConnectionError("Error 111 connecting")) is None
    assert "authentication" in (redis_failure(redis.AuthenticationError("WRONGPASS x")) or "")
    assert "permission" in (redis_failure(redis.exceptions.NoPermissionError("NOPERM")) or "")

    def connect() -> None:
        try:
            raise ssl.SSLError(1, "[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed")
        except ssl.SSLError as inner:
            raise redis.ConnectionError("Error 1 connecting") from inner

    with pytest.raises(redis.ConnectionError) as info:
        connect()
    assert "TLS handshake failed" in (redis_failure(info.value) or "")


def test_node_config_security_keys_from_env() -> None:
    cfg = load_config(
        {},
        env={
            "SKYMESH_ZK_AUTH": "digest:n:secret-pw",
            "SKYMESH_ZK_TLS_CA": "/ca.pem",
            "SKYMESH_REDIS_URL": "rediss://:redis-pw@h/0",
            "SKYMESH_REDIS_TLS_CA": "/rca.pem",
            "SKYMESH_REDIS_TLS_CERT": "/rc.pem",
            "SKYMESH_REDIS_TLS_KEY": "/rk.pem",
        },
    )
    assert "secret-pw" not in repr(cfg) and "redis-pw" not in repr(cfg)
    opts = cfg.coord_options()
    assert opts["zk_auth"] == "digest:n:secret-pw"
    assert opts["zk_tls"] == coord.TlsFiles("/ca.pem")
    assert opts["redis_tls"] == coord.TlsFiles("/rca.pem", "/rc.pem", "/rk.pem")
    assert load_config({}, env={}).coord_options() == {
        "zk_auth": None,
        "zk_tls": None,
        "redis_tls": None,
    }


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"zk_auth": "digest:only-user"}, "zk_auth must look like"),
        ({"zk_auth": "plain:u:secret-pw"}, "must start with"),
        ({"zk_tls_cert": "/c.pem"}, "zk_tls_cert and zk_tls_key"),
        ({"redis_tls_key": "/k.pem"}, "redis_tls_cert and redis_tls_key"),
        ({"redis_tls_ca": "/ca.pem", "redis_url": "redis://:secret-pw@h/0"}, "needs a rediss"),
    ],
)
def test_bad_security_config_is_one_clear_error(raw: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message) as info:
        load_config(raw, env={})
    assert "secret-pw" not in str(info.value)
