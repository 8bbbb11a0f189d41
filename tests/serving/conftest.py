"""One real `dmfnet serve` for every test of this folder that asks for it (starting one takes ~15 s on two
cores), and the tiny dynamic graph it serves. Without the serving environment (`make serve-env`) those tests
are skipped, except in CI, which must have it."""

import os
from pathlib import Path

import pytest

from dmfnet_edge.serving.ports import free_ports
from tests.conftest import needs
from tests.serving.live_server import SERVE_BIN, Server


@pytest.fixture(scope="package")
def graph(tmp_path_factory) -> Path:
    from dmfnet_edge.cli.main import export_main

    out = tmp_path_factory.mktemp("served")
    assert export_main(["onnx", "--model", "tiny", "-o", str(out), "--dynamic", "--name", "tiny-dyn"]) == 0
    return out / "tiny-dyn.onnx"


@pytest.fixture(scope="package")
def serving_env() -> Path:
    needs("tritonclient.http", "serve")
    if not SERVE_BIN.exists():
        if os.environ.get("CI"):
            raise RuntimeError(f"{SERVE_BIN} missing: CI must create the serving environment (make serve-env)")
        pytest.skip("no serving environment (make serve-env)")
    return SERVE_BIN


@pytest.fixture(scope="package")
def server(serving_env, graph):
    srv = Server(graph, free_ports(3))
    srv.info = srv.start()
    yield srv
    assert srv.stop() == 0
