"""E2E fixtures: images built with no registry, a compose project per module.

Every test here is skipped, with one message, when no Docker engine answers.
Otherwise the session builds the stand-in images once (``deploy/build-images.sh``,
cached by content hash: seconds when nothing changed), unless
``SKYMESH_E2E_OFFICIAL_IMAGES=1`` asks for the official images from a registry.
Each module's compose project (``compose_helpers.compose_up``) gets a unique
name and is taken down with ``down -v`` whatever happens; its logs are printed
when a test failed.
"""

from __future__ import annotations

import os
import subprocess

import pytest

from tests.e2e.compose_helpers import ROOT

NO_DOCKER = "no Docker engine reachable"


def _why_not_docker() -> str | None:
    """None when a Docker engine answers through the docker SDK, else the skip reason."""
    try:
        import docker
    except ImportError:
        return "the docker Python SDK is not installed (pip install -e '.[dev]')"
    try:
        client = docker.from_env(timeout=5)
        try:
            client.ping()
        finally:
            client.close()
    except Exception:
        return NO_DOCKER
    return None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    e2e = [item for item in items if item.get_closest_marker("e2e")]
    reason = _why_not_docker() if e2e else None
    if reason:
        skip = pytest.mark.skip(reason=reason)
        for item in e2e:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def image_env() -> dict[str, str]:
    """SKYMESH_*_IMAGE variables for compose: local stand-ins, built (or found) now."""
    env = {"SKYMESH_IMAGE": os.environ.get("SKYMESH_E2E_IMAGE", "skymesh:e2e")}
    if os.environ.get("SKYMESH_E2E_OFFICIAL_IMAGES") == "1":
        return env
    proc = subprocess.run([str(ROOT / "deploy" / "build-images.sh")], capture_output=True,
                          text=True, timeout=1200, check=False)
    if proc.returncode != 0:
        pytest.fail(f"deploy/build-images.sh failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    for line in proc.stdout.splitlines():
        key, sep, value = line.partition("=")
        if sep and key.startswith("SKYMESH_"):
            env[key] = value
    return env
