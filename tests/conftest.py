"""Shared fixtures: a real Docker engine and labelled test containers."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import docker
import pytest

from tests.dockerkit import Containers, client_or_none, ensure_image, fixture_containers, require

_image_ready: list[bool] = []


@pytest.fixture
def docker_client() -> Iterator[docker.DockerClient]:
    # Per test: a test that restarts dockerd must not leave stale pooled connections to the next one.
    client = client_or_none()
    if client is None:
        require("no Docker engine is reachable (start dockerd, see README)")
        return
    if not _image_ready:
        ensure_image(client)
        _image_ready.append(True)
    yield client
    client.close()


@pytest.fixture
def containers(docker_client: docker.DockerClient) -> Iterator[Containers]:
    yield from fixture_containers(docker_client)


@pytest.fixture(autouse=True)
def _collect_garbage_after_docker_tests(request: pytest.FixtureRequest) -> Iterator[None]:
    # A leaked socket then fails the test that leaked it, not whichever later test the collector ran in.
    yield
    if request.node.get_closest_marker("docker") is not None:
        gc.collect()
