"""Shared fixtures: a real Docker engine and labelled test containers."""

from __future__ import annotations

from collections.abc import Iterator

import docker
import pytest

from tests.dockerkit import Containers, client_or_none, ensure_image, fixture_containers, require


@pytest.fixture(scope="session")
def docker_client() -> Iterator[docker.DockerClient]:
    client = client_or_none()
    if client is None:
        require("no Docker engine is reachable (start dockerd, see README)")
        return
    ensure_image(client)
    yield client
    client.close()


@pytest.fixture
def containers(docker_client: docker.DockerClient) -> Iterator[Containers]:
    yield from fixture_containers(docker_client)
