"""``zk_auth_file`` and ``redis_password_file``: secrets read from files, never from env.

The compose files point nodes at files the ``init`` job generated; these tests
show the files are read, spliced into the right place, and that every way of
giving a secret twice or badly is a ``ConfigError`` that never shows the secret.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from coord._redis_url import parse_sentinel_url
from node.config import load_config
from node.errors import ConfigError

SECRET = "s3cr/et:@+%pw"  # characters a URL would misread unless quoted


def _file(tmp_path: Path, text: str, name: str = "secret") -> str:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    path.chmod(0o600)
    return str(path)


def test_zk_auth_file_sets_zk_auth(tmp_path: Path) -> None:
    path = _file(tmp_path, "digest:skymesh:abc123\n")
    cfg = load_config({"zk_auth_file": path}, env={})
    assert cfg.zk_auth == "digest:skymesh:abc123"
    assert "abc123" not in repr(cfg)


def test_zk_auth_file_from_the_environment(tmp_path: Path) -> None:
    path = _file(tmp_path, "digest:skymesh:abc123")
    cfg = load_config(None, env={"SKYMESH_ZK_AUTH_FILE": path})
    assert cfg.zk_auth == "digest:skymesh:abc123"


def test_zk_auth_file_content_is_validated_without_echoing_it(tmp_path: Path) -> None:
    path = _file(tmp_path, "digest:only-a-user")
    with pytest.raises(ConfigError) as err:
        load_config({"zk_auth_file": path}, env={})
    assert "only-a-user" not in str(err.value)


def test_zk_auth_and_zk_auth_file_together_are_refused(tmp_path: Path) -> None:
    path = _file(tmp_path, "digest:a:b")
    with pytest.raises(ConfigError, match="not both"):
        load_config({"zk_auth_file": path, "zk_auth": "digest:c:d"}, env={})


@pytest.mark.parametrize("text", ["", "\n", "one\ntwo\n"])
def test_a_secret_file_must_hold_one_line(tmp_path: Path, text: str) -> None:
    path = _file(tmp_path, text)
    with pytest.raises(ConfigError, match="one non-empty line"):
        load_config({"zk_auth_file": path}, env={})


def test_a_missing_secret_file_is_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read redis_password_file .*missing"):
        load_config({"redis_url": "redis://r:6379/0",
                     "redis_password_file": str(tmp_path / "missing")}, env={})


def test_redis_password_file_goes_into_a_plain_url(tmp_path: Path) -> None:
    path = _file(tmp_path, SECRET + "\n")
    cfg = load_config({"redis_url": "redis://redis:6379/0", "redis_password_file": path}, env={})
    import redis

    kwargs = redis.connection.parse_url(cfg.redis_url)  # redis-py's own reading of it
    assert kwargs["password"] == SECRET
    assert kwargs["host"] == "redis" and kwargs["port"] == 6379 and kwargs["db"] == 0
    assert SECRET not in repr(cfg)


def test_redis_password_file_keeps_the_url_username(tmp_path: Path) -> None:
    path = _file(tmp_path, SECRET)
    cfg = load_config({"redis_url": "rediss://skymesh@redis:6380/1",
                       "redis_password_file": path}, env={})
    import redis

    kwargs = redis.connection.parse_url(cfg.redis_url)
    assert (kwargs["username"], kwargs["password"]) == ("skymesh", SECRET)


def test_redis_password_file_goes_into_a_sentinel_url(tmp_path: Path) -> None:
    path = _file(tmp_path, SECRET)
    url = "redis+sentinel://s1:26379,s2:26379,s3:26379/mymaster/0"
    cfg = load_config({"redis_url": url, "redis_password_file": path}, env={})
    assert cfg.redis_url is not None
    parsed = parse_sentinel_url(cfg.redis_url)
    assert parsed.password == SECRET and parsed.username is None
    assert parsed.sentinels == (("s1", 26379), ("s2", 26379), ("s3", 26379))
    assert (parsed.service, parsed.db) == ("mymaster", 0)


def test_a_url_with_a_password_and_a_password_file_is_refused(tmp_path: Path) -> None:
    path = _file(tmp_path, SECRET)
    with pytest.raises(ConfigError, match="already carries a password") as err:
        load_config({"redis_url": "redis://u:inline@r:6379/0", "redis_password_file": path},
                    env={})
    assert "inline" not in str(err.value) and SECRET not in str(err.value)


def test_redis_password_file_needs_a_url(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="needs a redis_url"):
        load_config({"redis_password_file": _file(tmp_path, SECRET)}, env={})


def test_redis_password_file_refuses_a_unix_socket_url(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="needs a redis://"):
        load_config({"redis_url": "unix:///run/redis.sock",
                     "redis_password_file": _file(tmp_path, SECRET)}, env={})
