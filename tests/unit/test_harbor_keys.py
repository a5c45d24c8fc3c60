"""harbor.keys: credentials are written with safe modes and refused when unsafe or malformed."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
import zmq

from harbor import CredentialsError
from harbor import keys as hk


def _mode(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


def _error(directory: Path, node_id: int | None) -> str:
    with pytest.raises(CredentialsError) as info:
        hk.load(directory, node_id)
    text = str(info.value)
    assert "\n" not in text
    return text


def test_generate_per_node_keys_with_safe_modes(tmp_path):
    d = hk.generate(tmp_path / "keys", node_ids=[3, 1, 2])
    assert _mode(d) == _mode(d / "secret") == _mode(d / "public") == 0o700
    names = sorted(p.name for p in (d / "public").iterdir())
    assert names == ["node-1.key", "node-2.key", "node-3.key", "operator.key"]
    for p in (d / "secret").iterdir():
        assert _mode(p) == 0o600, p
    assert _mode(d / "console.token") == 0o600
    creds = hk.load(d, 2)
    assert creds.identity == 2 and creds.per_node
    assert creds.allowed[creds.public_key] == 2
    assert sorted(map(str, creds.allowed.values())) == ["1", "2", "3", "operator"]
    assert creds.key_of(3) == hk.load(d, 3).public_key
    assert creds.key_of(9) is None  # no cluster key: node 9 has no allowed key
    assert zmq.curve_public(creds.secret_key.encode()).decode() == creds.public_key
    assert len(creds.console_token) >= 40
    assert creds.secret_key not in repr(creds) and creds.console_token not in repr(creds)


def test_shared_cluster_key_serves_any_node_id(tmp_path):
    d = hk.generate(tmp_path / "k")
    a, b = hk.load(d, 1), hk.load(d, None)
    assert a.identity == b.identity == hk.CLUSTER
    assert a.public_key == b.public_key
    assert a.key_of(12345) == a.public_key
    assert not a.per_node


def test_refuses_to_overwrite_unless_forced(tmp_path):
    d = hk.generate(tmp_path / "k", node_ids=[1])
    old = hk.load(d, 1).public_key
    with pytest.raises(CredentialsError, match="not empty"):
        hk.generate(d, node_ids=[1])
    other = tmp_path / "other"
    other.mkdir()
    (other / "x").write_text("mine")
    with pytest.raises(CredentialsError):
        hk.generate(other)
    hk.generate(d, node_ids=[1], force=True)
    assert hk.load(d, 1).public_key != old
    with pytest.raises(CredentialsError, match="out of range"):
        hk.generate(tmp_path / "bad", node_ids=[0])


def test_load_errors_are_one_line(tmp_path):
    d = hk.generate(tmp_path / "k", node_ids=[1, 2])
    assert "missing keys directory" in _error(tmp_path / "nope", 1)
    assert "node-7.key_secret or cluster.key_secret" in _error(d, 7)
    # unsafe modes
    d.chmod(0o755)
    assert "bad mode 0755" in _error(d, 1)
    d.chmod(0o700)
    secret = d / "secret" / "node-1.key_secret"
    secret.chmod(0o644)
    assert "bad mode 0644" in _error(d, 1)
    secret.chmod(0o600)
    (d / "console.token").chmod(0o640)
    assert "console token" in _error(d, 1)
    (d / "console.token").chmod(0o600)
    # a secret key that does not match its public key
    text = secret.read_text()
    other = (d / "secret" / "node-2.key_secret").read_text()
    sec2 = [ln for ln in other.splitlines() if "secret-key" in ln][0]
    secret.write_text("\n".join(sec2 if "secret-key" in ln else ln for ln in text.splitlines()))
    assert "does not match" in _error(d, 1)
    # not a key at all
    secret.write_text(text.replace('public-key = "', 'public-key = "!!'))
    assert "bad public key" in _error(d, 1)
    secret.write_text(text)
    # a stray file in the allow-list
    (d / "public" / "mallory.key").write_text((d / "public" / "node-2.key").read_text())
    assert "bad key file name 'mallory'" in _error(d, 1)
    (d / "public" / "mallory.key").unlink()
    # the node's own key removed from the allow-list
    (d / "public" / "node-1.key").unlink()
    assert "not in the allow-list" in _error(d, 1)
    hk.load(d, 2)


def test_reload_sees_a_revoked_key(tmp_path):
    d = hk.generate(tmp_path / "k", node_ids=[1, 2, 3])
    creds = hk.load(d, 1)
    key3 = creds.key_of(3)
    (d / "public" / "node-3.key").unlink()
    fresh = creds.reload()
    assert key3 in creds.allowed and key3 not in fresh.allowed
    assert fresh.key_of(3) is None
    (d / "public" / "node-1.key").unlink()
    with pytest.raises(CredentialsError, match="own key"):
        fresh.reload()


def test_operator_credentials_for_the_console(tmp_path):
    d = hk.generate(tmp_path / "k", node_ids=[1])
    op = hk.load_operator(d)
    assert op.identity == hk.OPERATOR and op.allowed[op.public_key] == hk.OPERATOR
    assert op.console_token == hk.load(d, 1).console_token
    (d / "public" / "operator.key").unlink()
    with pytest.raises(CredentialsError, match="not in the allow-list"):
        hk.load_operator(d)
