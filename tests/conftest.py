from __future__ import annotations

from collections.abc import Iterator

import pytest

from maze import MaClient
from tests.helpers import HeadProcess, NatsServer
from tests.llm_server import ScriptedLLM


@pytest.fixture(scope="module")
def nats_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsServer]:
    server = NatsServer(tmp_path_factory.mktemp("nats"))
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def head(nats_server: NatsServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[HeadProcess]:
    """One head per test module, on the module's own nats-server."""
    proc = HeadProcess(tmp_path_factory.mktemp("head"), nats_url=nats_server.url, extra=["--cpus", "4"])
    proc.start()
    yield proc
    code = proc.stop()
    assert code == 0, proc.log()


@pytest.fixture
def client(head: HeadProcess) -> MaClient:
    return MaClient(head.url)


@pytest.fixture(scope="module")
def llm() -> Iterator[ScriptedLLM]:
    """A scripted OpenAI-compatible endpoint on loopback (tests/llm_server.py), one per module."""
    server = ScriptedLLM().start()
    yield server
    server.stop()
