"""Cluster credentials on disk: CURVE key pairs, the allow-list and the console token.

Layout of a keys directory (written by :func:`generate`, read by :func:`load`)::

    DIR/                      0700
      public/                 0700  the allow-list: one pyzmq public certificate per identity
        node-<id>.key               a node's own key (bound to that node id)
        cluster.key                 the shared cluster key (any node id), if generated
        operator.key                the operator's key (console/CLI, never harbor frames)
      secret/                 0700
        <name>.key_secret     0600  the matching secret certificates
      console.token           0600  the console token

Two ways to give nodes keys, chosen at :func:`generate` time:

- **per-node keys** (``node_ids=[1, 2, 3]``): each node has its own key pair and
  the ZAP handler tells the transport which node id a connection belongs to,
  so a member cannot speak as another member, and one node can be cut off by
  deleting its ``public/node-<id>.key`` (then ``reload``). Needs node ids known
  in advance.
- **one shared cluster key** (no ``node_ids``): every node holds the same key
  pair, like an Erlang cookie. Works with ``node_id = "auto"``; a member can
  claim any node id and nobody can be revoked alone (rotate the whole key).

The file names carry the identity (pyzmq's certificate files have no field for
it that its loader reads): ``node-<id>`` -> the int ``id``, ``cluster`` ->
``"cluster"``, ``operator`` -> ``"operator"``.

Example::

    generate("/etc/skymesh/keys", node_ids=[1, 2, 3])
    creds = load("/etc/skymesh/keys", node_id=2)
    creds.identity, creds.allowed[creds.public_key]      # (2, 2)
"""

from __future__ import annotations

import os
import re
import secrets
import stat
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Final, Literal

import zmq
import zmq.auth

from harbor.errors import CredentialsError

__all__ = [
    "CLUSTER",
    "OPERATOR",
    "Credentials",
    "Identity",
    "generate",
    "load",
    "load_allowed",
    "load_operator",
]

CLUSTER: Final = "cluster"
OPERATOR: Final = "operator"
Identity = int | Literal["cluster", "operator"]
"""Who a public key belongs to: a node id, the shared cluster key or the operator."""

TOKEN_FILE: Final = "console.token"  # noqa: S105 -- a file name, not a secret
_NAME = re.compile(r"^(?:node-([1-9][0-9]{0,9})|cluster|operator)$")
_KEY_LEN: Final = 40  # z85 of 32 bytes


@dataclass(frozen=True, slots=True)
class Credentials:
    """One node's view of the cluster credentials (see the module docstring).

    ``public_key``/``secret_key`` are z85 text (40 characters). ``allowed``
    maps every public key of the allow-list to its identity; it is a read-only
    snapshot: call :meth:`reload` to see files removed or added since.
    """

    directory: Path
    identity: Identity
    public_key: str
    secret_key: str
    allowed: Mapping[str, Identity]
    console_token: str

    @property
    def per_node(self) -> bool:
        """True if this node has its own key (its node id is bound to it)."""
        return isinstance(self.identity, int)

    def key_of(self, node_id: int) -> str | None:
        """The allow-listed key of ``node_id``: its own key, else the cluster key, else None."""
        cluster = None
        for key, who in self.allowed.items():
            if who == node_id:
                return key
            if who == CLUSTER:
                cluster = key
        return cluster

    def may_speak_as(self, user_id: str, node_id: int) -> bool:
        """True if a connection whose ZAP User-Id is ``user_id`` may send as ``node_id``."""
        return user_id == CLUSTER or user_id == str(node_id)

    def reload(self) -> Credentials:
        """A copy with the allow-list read again from disk (revocation: a key file removed).

        Raises ``CredentialsError`` if the directory became unreadable or this
        node's own key is no longer allowed.
        """
        allowed = load_allowed(self.directory)
        if allowed.get(self.public_key) != self.identity:
            raise CredentialsError(f"{self.directory}: this node's own key is not allow-listed")
        return Credentials(
            self.directory,
            self.identity,
            self.public_key,
            self.secret_key,
            allowed,
            self.console_token,
        )

    def __repr__(self) -> str:  # never print the secret key or the token
        return (
            f"Credentials(directory={str(self.directory)!r}, identity={self.identity!r}, "
            f"public_key={self.public_key!r}, allowed={len(self.allowed)} keys)"
        )


def _identity(name: str) -> Identity:
    m = _NAME.match(name)
    if m is None:
        raise CredentialsError(f"bad key file name {name!r} (node-<id>, cluster or operator)")
    if m.group(1):
        return int(m.group(1))
    return CLUSTER if name == CLUSTER else OPERATOR


def _check_private(path: Path, what: str) -> None:
    """Refuse ``path`` if group or others may read or write it."""
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise CredentialsError(f"{path}: missing {what}") from None
    except OSError as exc:
        raise CredentialsError(f"{path}: cannot read {what}: {exc.strerror}") from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise CredentialsError(
            f"{path}: bad mode {stat.S_IMODE(mode):04o} for {what}, must not be group/other "
            f"accessible (chmod {'700' if stat.S_ISDIR(mode) else '600'})"
        )


def _check_key(text: bytes | None, path: Path, what: str) -> str:
    """Validate one z85 key from a certificate file and return it as text."""
    if text is None or len(text) != _KEY_LEN:
        raise CredentialsError(f"{path}: bad {what} (expected {_KEY_LEN} z85 characters)")
    try:
        zmq.utils.z85.decode(text)
    except (ValueError, KeyError, TypeError):
        raise CredentialsError(f"{path}: bad {what} (not z85)") from None
    return text.decode("ascii")


def _read_cert(path: Path, *, secret: bool) -> tuple[str, str | None]:
    try:
        public, secret_key = zmq.auth.load_certificate(path)
    except (OSError, ValueError) as exc:
        raise CredentialsError(f"{path}: unreadable certificate: {exc}") from None
    pub = _check_key(public, path, "public key")
    if not secret:
        return pub, None
    sec = _check_key(secret_key, path, "secret key")
    try:
        derived = zmq.curve_public(sec.encode("ascii")).decode("ascii")
    except zmq.ZMQError:
        raise CredentialsError(f"{path}: bad secret key") from None
    if derived != pub:
        raise CredentialsError(f"{path}: secret key does not match its public key")
    return pub, sec


def load_allowed(directory: str | os.PathLike[str]) -> Mapping[str, Identity]:
    """Read the allow-list (``DIR/public/*.key``): public key -> identity.

    Raises ``CredentialsError`` for a missing directory, a bad file name or key,
    or one key listed under two names.
    """
    pub_dir = Path(directory) / "public"
    if not pub_dir.is_dir():
        raise CredentialsError(f"{pub_dir}: missing allow-list directory")
    allowed: dict[str, Identity] = {}
    for path in sorted(pub_dir.glob("*.key")):
        who = _identity(path.stem)
        key, _ = _read_cert(path, secret=False)
        if key in allowed:
            raise CredentialsError(f"{path}: key already listed for {allowed[key]!r}")
        allowed[key] = who
    return MappingProxyType(allowed)


def load(directory: str | os.PathLike[str], node_id: int | None) -> Credentials:
    """Load the credentials node ``node_id`` uses (``None``: a node whose id is "auto").

    The node's own key is ``secret/node-<id>.key_secret`` if there is one, else
    the shared ``secret/cluster.key_secret``. Raises ``CredentialsError`` (one
    line: the file and what is wrong) for a missing file, a group/other
    accessible directory or secret file, a bad or mismatched key, or an own
    key that is not in the allow-list.
    """
    names = ([f"node-{node_id}"] if node_id is not None else []) + [CLUSTER]
    return _load(Path(directory), names)


def load_operator(directory: str | os.PathLike[str]) -> Credentials:
    """Load the operator's credentials (``secret/operator.key_secret``), for the CLI/console.

    Raises ``CredentialsError`` as :func:`load` does.
    """
    return _load(Path(directory), [OPERATOR])


def _load(root: Path, names: list[str]) -> Credentials:
    """Load the first of ``names`` that has a secret certificate (see :func:`load`)."""
    _check_private(root, "keys directory")
    _check_private(root / "secret", "secret directory")
    for name in names:
        path = root / "secret" / f"{name}.key_secret"
        if path.exists():
            break
    else:
        raise CredentialsError(
            f"{root / 'secret'}: missing {' or '.join(n + '.key_secret' for n in names)}"
        )
    _check_private(path, "secret key file")
    public, secret = _read_cert(path, secret=True)
    assert secret is not None
    token_path = root / TOKEN_FILE
    _check_private(token_path, "console token")
    token = token_path.read_text("utf-8").strip()
    if len(token) < 16:
        raise CredentialsError(f"{token_path}: console token too short (16 characters minimum)")
    allowed = load_allowed(root)
    identity = _identity(name)
    if allowed.get(public) != identity:
        raise CredentialsError(f"{path}: this key is not in the allow-list {root / 'public'}")
    return Credentials(root, identity, public, secret, allowed, token)


def _write_private(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)


def generate(
    directory: str | os.PathLike[str],
    node_ids: Iterable[int] = (),
    *,
    force: bool = False,
) -> Path:
    """Write a cluster's credentials into ``directory`` and return its path.

    With ``node_ids`` every listed node gets its own key pair; without, one
    shared cluster key pair is written (see the module docstring for the
    trade-off). An operator key pair and a console token are always written.
    The directory is created 0700; secret files are 0600.

    Raises ``CredentialsError`` if ``directory`` exists and is not empty
    (``force=True`` overwrites the files this function writes), or a node id
    is out of range.
    """
    root = Path(directory)
    ids = sorted(set(node_ids))
    for n in ids:
        if not 1 <= n < 2**31:
            raise CredentialsError(f"node id {n} out of range 1..2**31-1")
    if root.exists() and any(root.iterdir()) and not force:
        raise CredentialsError(f"{root}: exists and is not empty (force to overwrite)")
    pub_dir, sec_dir = root / "public", root / "secret"
    old = os.umask(0o077)  # every file and directory created below is private from birth
    try:
        for d in (root, pub_dir, sec_dir):
            d.mkdir(mode=0o700, parents=d is root, exist_ok=True)
            d.chmod(0o700)
        if force:
            for d in (pub_dir, sec_dir):
                for f in d.iterdir():
                    f.unlink()
            (root / TOKEN_FILE).unlink(missing_ok=True)
        names = [f"node-{n}" for n in ids] or [CLUSTER]
        for name in [*names, OPERATOR]:
            public, secret = zmq.auth.create_certificates(sec_dir, name)
            Path(public).rename(pub_dir / f"{name}.key")
            Path(secret).chmod(0o600)
        _write_private(root / TOKEN_FILE, secrets.token_urlsafe(32) + "\n")
    except OSError as exc:
        raise CredentialsError(f"{root}: cannot write credentials: {exc}") from None
    finally:
        os.umask(old)
    return root
