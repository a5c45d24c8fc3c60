"""Harbor credentials and the refusal to expose a harbor without them.

A node with ``keys_dir`` loads its CURVE credentials from there (``harbor.keys``);
a node whose harbor binds or advertises a non-loopback address without keys
refuses to start, unless ``insecure = true`` (then it logs why at start).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .config import is_loopback
from .errors import ConfigError

if TYPE_CHECKING:
    from harbor.keys import Credentials

__all__ = ["check_exposure", "load_credentials"]


def load_credentials(keys_dir: str | None, node_id: int | None) -> Credentials | None:
    """The node's CURVE credentials from ``keys_dir`` (``ConfigError`` if unusable)."""
    if keys_dir is None:
        return None
    from harbor.errors import CredentialsError
    from harbor.keys import load

    try:
        return load(keys_dir, node_id)
    except CredentialsError as exc:
        raise ConfigError(f"keys_dir {keys_dir}: {exc}") from exc


def check_exposure(
    harbor: bool, creds: Credentials | None, insecure: bool, hosts: tuple[str, str]
) -> str | None:
    """Refuse a harbor reachable off loopback without keys, unless ``insecure``; then
    return the warning to log at start."""
    exposed = [h for h in hosts if not is_loopback(h)]
    if not harbor or creds is not None or not exposed:
        return None
    if not insecure:
        raise ConfigError(
            f"the harbor binds/advertises {exposed[0]} without keys: set keys_dir "
            "(skymesh keys init DIR) or insecure = true"
        )
    return (f"INSECURE: the harbor on {exposed[0]} has no keys: anyone who reaches it "
            "can act as a cluster member (insecure = true)")
