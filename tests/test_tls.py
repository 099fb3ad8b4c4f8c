"""TLS passes through to both the API (HTTPS) and the embedded NATS server: one certificate, key
and CA; the SDK, the CLI and workers verify the head against that CA."""

from __future__ import annotations

import shutil
import ssl
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import nats
import pytest

from maze import MaClient, task
from tests.helpers import WorkerProcess, free_port, wait_until

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl makes the test certificates")


@task
def shout(text: str = ""):
    return {"text": text.upper()}


def _certificates(where: Path) -> tuple[Path, Path, Path]:
    """A CA, and a certificate it signed for 127.0.0.1 and localhost."""
    ca_key, ca, key, csr, cert = (where / n for n in ("ca.key", "ca.pem", "head.key", "head.csr", "head.pem"))
    ext = where / "san.ext"
    ext.write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    run = lambda *args: subprocess.run(["openssl", *args], check=True, capture_output=True)  # noqa: E731
    run(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        str(ca_key),
        "-out",
        str(ca),
        "-days",
        "2",
        "-subj",
        "/CN=maze-test-ca",
    )
    run(
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        str(key),
        "-out",
        str(csr),
        "-subj",
        "/CN=127.0.0.1",
    )
    run("x509", "-req", "-in", str(csr), "-CA", str(ca), "-CAkey", str(ca_key), "-CAcreateserial", "-out", str(cert),
        "-days", "2", "-extfile", str(ext))  # fmt: skip
    return cert, key, ca


class TlsHead:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.port, self.nats_port = free_port(), free_port()
        self.cert, self.key, self.ca = _certificates(root)
        self.url = f"https://127.0.0.1:{self.port}"
        self.trust = ssl.create_default_context(cafile=str(self.ca))
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        log = (self.root / "head.log").open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "maze", "start", "--head", "--port", str(self.port), "--nats-port", str(self.nats_port),
             "--data-dir", str(self.root / "data"), "--tls-cert", str(self.cert), "--tls-key", str(self.key),
             "--tls-ca", str(self.ca), "--log-level", "info"],
            stdout=log,
            stderr=subprocess.STDOUT,
        )  # fmt: skip

        def answers() -> bool:
            assert self.proc is not None and self.proc.poll() is None, (self.root / "head.log").read_text()
            try:
                return httpx.get(f"{self.url}/healthz", verify=self.trust, timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        wait_until(answers, timeout=60)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=30)


@pytest.fixture(scope="module")
def head(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsHead]:
    proc = TlsHead(tmp_path_factory.mktemp("tls"))
    proc.start()
    yield proc
    proc.stop()


def test_the_api_speaks_https_verified_against_the_ca(head: TlsHead, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(httpx.HTTPError):  # plain HTTP is not served
        httpx.get(f"http://127.0.0.1:{head.port}/healthz", timeout=5)
    with pytest.raises(httpx.ConnectError):  # and an unknown CA is not trusted
        httpx.get(f"{head.url}/healthz", timeout=5, verify=ssl.create_default_context())
    monkeypatch.setenv("MAZE_TLS_CA", str(head.ca))
    client = MaClient(head.url)
    wf = client.create_workflow()
    t = wf.add_task(shout, inputs={"text": "secure"})
    assert wf.show_results(wf.run())["task_results"][t.task_id] == {"text": "SECURE"}  # SSE over https too


def test_nats_speaks_tls_and_workers_join_over_it(head: TlsHead, tmp_path: Path) -> None:
    (url,) = httpx.get(f"{head.url}/cluster/nats", params={"node_id": "tls-node"}, verify=head.trust).json()[
        "nats_urls"
    ]
    assert url.startswith("tls://")

    async def plain_refused() -> None:
        with pytest.raises(Exception):  # noqa: B017
            nc = await nats.connect(
                url.replace("tls://", "nats://"),
                connect_timeout=2,
                allow_reconnect=False,
                max_reconnect_attempts=0,
            )
            await nc.close()
        nc = await nats.connect(url, tls=ssl.create_default_context(cafile=str(head.ca)))
        await nc.close()

    import asyncio

    asyncio.run(plain_refused())

    class Head:  # what WorkerProcess needs of a head
        port = head.port
        url = head.url

    worker = WorkerProcess(
        Head(), "tls-worker", ["--cpus", "1", "--gpus", "none", "--tls-ca", str(head.ca)], tmp_path
    )  # type: ignore[arg-type]
    worker.start(wait=False)
    try:

        def joined() -> bool:
            nodes = httpx.get(f"{head.url}/cluster/resources", verify=head.trust, timeout=5).json()["nodes"]
            return any(n["node_id"] == "tls-worker" and n["state"] == "alive" for n in nodes)

        wait_until(joined, timeout=30)
    finally:
        worker.stop()


def test_a_rebuild_reads_the_log_over_tls_as_the_heads_user(head: TlsHead, monkeypatch: pytest.MonkeyPatch) -> None:
    """The rebuild reads the log on a connection of its own (maze/events/log_reader.py): to the
    embedded server that speaks only TLS and admits only its users, as the read models' process."""
    monkeypatch.setenv("MAZE_TLS_CA", str(head.ca))
    client = MaClient(head.url)
    wf = client.create_workflow()
    t = wf.add_task(shout, inputs={"text": "again"})
    assert wf.show_results(wf.run())["task_results"][t.task_id] == {"text": "AGAIN"}
    report = httpx.post(f"{head.url}/projections/rebuild", verify=head.trust, timeout=120).json()
    assert report["equal"] is True, report
    assert report["tables"]["runs"]["rows"] >= 1
