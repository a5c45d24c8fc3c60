"""Node configuration: one TOML file, every key overridable by ``SKYMESH_<KEY>``.

Example file::

    cluster = "demo"
    node_id = 1            # or "auto" (allocated by coord)
    workers = 2
    zk_hosts = "127.0.0.1:2181"
    redis_url = "redis://127.0.0.1:6379/0"
    zk_auth = "digest:skymesh:secret"   # the cluster's ZooKeeper identity (ACLs)
    zk_tls_ca = "/etc/skymesh/zk-ca.pem"   # and zk_tls_cert, zk_tls_key; redis_tls_* alike

    [[services]]
    class = "examples.hello:Hello"
    args = ["world"]
    name = ".hello"

``SKYMESH_WORKERS=4`` overrides ``workers``; ``SKYMESH_SERVICES`` takes a JSON
list of service tables or ``"mod:Class,mod:Class"``. Secrets (``zk_auth``,
the password in ``redis_url``) are kept out of ``repr`` and never logged.

A misspelt key is an error, in the file and in the environment alike: any
``SKYMESH_*`` variable that is neither ``SKYMESH_<KEY>`` for a key here nor in
``ENV_NOT_CONFIG`` (the project's scripts' own variables) raises ``ConfigError``
naming the nearest known name, so a typo in a setting never silently leaves it off.
"""

from __future__ import annotations

import difflib
import ipaddress
import json
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from .errors import ConfigError

__all__ = ["ENV_NOT_CONFIG", "NodeConfig", "ServiceSpec", "is_loopback", "load_config"]

# SKYMESH_* variables that are not node settings: read by scripts/servers.sh, the
# compose files and deploy/ (image names), deploy/build-images.sh and the e2e tests.
# A new such variable must be added here, or every node started beside it refuses.
ENV_NOT_CONFIG = frozenset({
    "SKYMESH_ZK_PORT", "SKYMESH_REDIS_PORT", "SKYMESH_SERVERS_DIR", "SKYMESH_SERVERS_WAIT",
    "SKYMESH_IMAGE", "SKYMESH_PYTHON_IMAGE", "SKYMESH_ZOOKEEPER_IMAGE", "SKYMESH_REDIS_IMAGE",
    "SKYMESH_DEBIAN_MIRROR", "SKYMESH_DEBIAN_SUITE",
    "SKYMESH_E2E_IMAGE", "SKYMESH_E2E_OFFICIAL_IMAGES", "SKYMESH_COMPOSE",
})  # fmt: skip


@dataclass(frozen=True)
class ServiceSpec:
    """A service to start at boot: class path, arguments, optional name."""

    cls: str
    args: tuple[Any, ...] = ()
    name: str | None = None


@dataclass(frozen=True)
class NodeConfig:
    """Validated node settings (see the module docstring for the file format)."""

    cluster: str = "skymesh"
    node_id: int | None = 1  # None: "auto"
    workers: int = 2
    bind: str = "127.0.0.1"
    advertise: str | None = None
    pull_port: int = 0  # harbor PULL port (0: any free port)
    pub_port: int = 0  # harbor PUB port (0: any free port)
    # A peer silent this long (seconds) is reported down; load stretches it up to
    # harbor_peer_timeout_max (0: five times harbor_peer_timeout).
    harbor_peer_timeout: float = 1.0
    harbor_peer_timeout_max: float = 0.0
    zk_hosts: str | None = None
    redis_url: str | None = field(default=None, repr=False)  # may carry a password
    session_timeout: float = 10.0
    console_port: int | None = None
    console_token: str | None = None  # read from console_token_file (never from argv)
    console_token_file: str | None = None
    console_bind: str = "127.0.0.1"  # a container sets 0.0.0.0 to be reachable from outside
    log_file: str | None = None
    log_level: str = "info"
    log_format: str = "text"  # or "json": one object per line
    call_timeout: float = 10.0
    monitor_threshold: float = 5.0
    services: tuple[ServiceSpec, ...] = field(default_factory=tuple)
    zk_auth: str | None = field(default=None, repr=False)  # "digest:user:password"
    zk_tls_ca: str | None = None
    zk_tls_cert: str | None = None
    zk_tls_key: str | None = None
    redis_tls_ca: str | None = None
    redis_tls_cert: str | None = None
    redis_tls_key: str | None = None
    # Batch weight per worker (-1 one message, 0 all, n a 1/2**n share); None: skynet's table.
    weights: tuple[int, ...] | None = None
    offload_threads: int = 4  # the pool behind Service.offload
    mailbox_limit: int = 0  # default per-service mailbox bound (0: unbounded, like skynet)
    send_tracebacks: bool = False  # remote callers get a handler's traceback too
    keys_dir: str | None = None  # cluster credentials (skymesh keys init): CURVE on the harbor
    insecure: bool = False  # allow a non-loopback harbor without keys (logged at start)
    on_session_lost: str = "serve"  # or "isolate": refuse cluster traffic until rejoined

    @property
    def standalone(self) -> bool:
        """True when no ZooKeeper is configured: the embedded backend is used."""
        return self.zk_hosts is None

    def coord_options(self) -> dict[str, Any]:
        """Keyword arguments for ``coord.connect``: ZooKeeper identity and TLS, Redis TLS."""
        from coord import TlsFiles

        def tls(ca: str | None, cert: str | None, key: str | None) -> TlsFiles | None:
            return None if ca is cert is key is None else TlsFiles(ca, cert, key)

        return {
            "zk_auth": self.zk_auth,
            "zk_tls": tls(self.zk_tls_ca, self.zk_tls_cert, self.zk_tls_key),
            "redis_tls": tls(self.redis_tls_ca, self.redis_tls_cert, self.redis_tls_key),
        }


_INT = {"workers", "console_port", "pull_port", "pub_port", "offload_threads", "mailbox_limit"}
_FLOAT = {"call_timeout", "monitor_threshold", "session_timeout", "harbor_peer_timeout",
          "harbor_peer_timeout_max"}
_STR = {"cluster", "bind", "advertise", "zk_hosts", "redis_url", "log_file", "log_level",
        "console_token", "console_bind", "on_session_lost", "log_format",
        "console_token_file", "zk_auth", "zk_tls_ca", "zk_tls_cert", "zk_tls_key",
        "redis_tls_ca", "redis_tls_cert", "redis_tls_key", "keys_dir"}  # fmt: skip
_BOOL = {"send_tracebacks", "insecure"}
_KEYS = {f.name for f in fields(NodeConfig)}


def load_config(
    source: str | Path | Mapping[str, Any] | None = None,
    env: Mapping[str, str] | None = None,
) -> NodeConfig:
    """Read a TOML file (or take a mapping), apply ``SKYMESH_*`` overrides, validate.

    Raises ``ConfigError`` with one line naming the bad key and why.
    """
    raw: dict[str, Any] = {}
    if isinstance(source, str | Path):
        try:
            raw = tomllib.loads(Path(source).read_text(encoding="utf-8"))
        except OSError as exc:
            raise ConfigError(f"cannot read config file {source}: {exc.strerror}") from exc
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {source} is not valid TOML: {exc}") from exc
    elif source is not None:
        raw = dict(source)
    env = os.environ if env is None else env
    _check_env_names(env)
    for key in _KEYS:
        value = env.get(f"SKYMESH_{key.upper()}")
        if value is not None:
            raw[key] = _from_env(key, value)
    unknown = set(raw) - _KEYS
    if unknown:
        hints = [f"{k}{_nearest(str(k), _KEYS)}" for k in sorted(unknown, key=str)]
        raise ConfigError(f"unknown config key(s): {', '.join(hints)}")
    return _validate(raw)


def _check_env_names(env: Mapping[str, str]) -> None:
    known = {f"SKYMESH_{key.upper()}" for key in _KEYS} | ENV_NOT_CONFIG
    for name in sorted(env):
        if name.startswith("SKYMESH_") and name not in known:
            # Match on what follows the prefix: every name shares "SKYMESH_".
            hint = _nearest(name.removeprefix("SKYMESH_"), {k[8:] for k in known}, "SKYMESH_")
            hint = hint or "; settings are SKYMESH_<KEY> for the keys in node/config.py"
            raise ConfigError(f"unknown environment variable {name}{hint}")


def _nearest(name: str, known: set[str] | frozenset[str], prefix: str = "") -> str:
    close = difflib.get_close_matches(name, sorted(known), n=1, cutoff=0.6)
    return f" (did you mean {prefix}{close[0]}?)" if close else ""


def _from_env(key: str, value: str) -> Any:
    if key == "services":
        text = value.strip()
        if text.startswith("["):
            try:
                return json.loads(text)
            except json.JSONDecodeError as exc:
                raise ConfigError(f"SKYMESH_SERVICES is not valid JSON: {exc}") from exc
        return [{"class": part.strip()} for part in text.split(",") if part.strip()]
    return value


def _validate(raw: dict[str, Any]) -> NodeConfig:
    out: dict[str, Any] = {}
    for key, value in raw.items():
        if key == "node_id":
            out[key] = _node_id(value)
        elif key in _INT:
            low = 1 if key in ("workers", "offload_threads") else 0
            out[key] = _number(key, value, int, low)
        elif key in _FLOAT:
            out[key] = _number(key, value, float, 0.0)
        elif key in _STR:
            if not isinstance(value, str):
                raise ConfigError(f"{key} must be a string, got {value!r}")
            keep = ("cluster", "bind", "log_level", "console_bind", "on_session_lost",
                    "log_format")
            out[key] = value or None if key not in keep else value
        elif key in _BOOL:
            out[key] = _bool(key, value)
        elif key == "services":
            out[key] = _services(value)
        elif key == "weights":
            out[key] = _weights(value)
    if out.get("log_level", "info") not in ("debug", "info", "warning", "error"):
        level = out["log_level"]
        raise ConfigError(f"log_level must be debug, info, warning or error, got {level!r}")
    if out.get("console_token_file"):
        try:
            out["console_token"] = Path(out["console_token_file"]).read_text("utf-8").strip()
        except OSError as exc:
            raise ConfigError(f"cannot read console_token_file: {exc.strerror}") from exc
    if out.get("log_format", "text") not in ("text", "json"):
        raise ConfigError(f"log_format must be text or json, got {out['log_format']!r}")
    if out.get("on_session_lost", "serve") not in ("serve", "isolate"):
        got = out["on_session_lost"]
        raise ConfigError(f"on_session_lost must be serve or isolate, got {got!r}")
    _check_security(out)
    timeout = out.get("harbor_peer_timeout", 1.0)
    if timeout <= 0:
        raise ConfigError(f"harbor_peer_timeout must be > 0, got {timeout}")
    if 0 < out.get("harbor_peer_timeout_max", 0.0) < timeout:
        raise ConfigError("harbor_peer_timeout_max must be 0 or >= harbor_peer_timeout")
    if "workers" in out and out["workers"] > 256:
        raise ConfigError(f"workers must be at most 256, got {out['workers']}")
    return NodeConfig(**out)


def _check_security(out: dict[str, Any]) -> None:
    """``zk_auth`` well formed (the message never shows the secret); certs come with keys."""
    from coord import ZkAuth

    if out.get("zk_auth"):
        try:
            ZkAuth.parse(out["zk_auth"]).kazoo_kwargs()
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
    for svc in ("zk", "redis"):
        if (out.get(f"{svc}_tls_cert") is None) != (out.get(f"{svc}_tls_key") is None):
            raise ConfigError(f"{svc}_tls_cert and {svc}_tls_key must be given together")
    url = out.get("redis_url") or ""
    tls_keys = [k for k in ("redis_tls_ca", "redis_tls_cert", "redis_tls_key") if out.get(k)]
    if tls_keys and url and not url.startswith(("rediss://", "rediss+sentinel://")):
        # Never ignore a TLS setting silently: the URL must ask for TLS too.
        raise ConfigError(f"{tls_keys[0]} needs a rediss:// or rediss+sentinel:// redis_url")


def _weights(value: Any) -> tuple[int, ...]:
    items = value.split(",") if isinstance(value, str) else value
    try:
        weights = tuple(int(w) for w in items)
    except (TypeError, ValueError):
        raise ConfigError(f"weights must be a list of integers >= -1, got {value!r}") from None
    if not weights or min(weights) < -1:
        raise ConfigError(f"weights must be a list of integers >= -1, got {value!r}")
    return weights


def _node_id(value: Any) -> int | None:
    if value == "auto":
        return None
    try:
        n = int(value)
    except (TypeError, ValueError):
        raise ConfigError(f"node_id must be an integer or 'auto', got {value!r}") from None
    if not 1 <= n <= (1 << 31) - 1:
        raise ConfigError(f"node_id must be in 1..2147483647, got {n}")
    return n


def _number(key: str, value: Any, kind: type, minimum: float) -> Any:
    if isinstance(value, bool):
        raise ConfigError(f"{key} must be a number, got {value!r}")
    try:
        n = kind(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{key} must be a number, got {value!r}") from None
    if n < minimum:
        raise ConfigError(f"{key} must be >= {minimum}, got {n}")
    return n


def _services(value: Any) -> tuple[ServiceSpec, ...]:
    if not isinstance(value, list):
        raise ConfigError("services must be a list of tables with a 'class' key")
    specs = []
    for i, entry in enumerate(value):
        item = {"class": entry} if isinstance(entry, str) else entry
        if not isinstance(item, dict) or not isinstance(item.get("class"), str):
            raise ConfigError(f"services[{i}] needs a 'class' string like 'module:Class'")
        if ":" not in item["class"]:
            raise ConfigError(f"services[{i}].class must look like 'module:Class'")
        args = item.get("args", [])
        if not isinstance(args, list):
            raise ConfigError(f"services[{i}].args must be a list")
        extra = set(item) - {"class", "args", "name"}
        if extra:
            raise ConfigError(f"services[{i}] has unknown key(s): {', '.join(sorted(extra))}")
        specs.append(ServiceSpec(item["class"], tuple(args), item.get("name")))
    return tuple(specs)


def _bool(key: str, value: Any) -> bool:
    """A TOML boolean, or ``true/false/1/0/yes/no/on/off`` from the environment."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("true", "1", "yes", "on"):
        return True
    if text in ("false", "0", "no", "off"):
        return False
    raise ConfigError(f"{key} must be true or false, got {value!r}")


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ``::1`` and ``localhost``: reachable from this machine only."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
