"""Fetching MNIST into the cache, served from a loopback HTTP server (no network needed):
checksums decide what is installed, and a failed fetch ends in one clear message."""

import functools
import http.server
import threading

import pytest

from stochopt import data
from stochopt.data import FILES, load_idx_dir, resolve_data_dir
from stochopt.errors import StochoptError


@pytest.fixture
def serve(tmp_path):
    """Serve a folder on 127.0.0.1; yields a function folder -> base URL."""
    servers = []

    def start(folder):
        handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(folder))
        handler.log_message = lambda *a, **k: None
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_port}/"

    yield start
    for s in servers:
        s.shutdown()
        s.server_close()


def test_fetch_verifies_and_installs_the_real_files(data_dir, serve, monkeypatch, tmp_path):
    monkeypatch.setattr(data, "MIRRORS", ("http://127.0.0.1:9/", serve(data_dir)))  # 1st fails
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("STOCHOPT_DATA", raising=False)
    directory = resolve_data_dir()
    assert directory == tmp_path / "cache" / "stochopt" / "mnist"
    assert sorted(p.name for p in directory.iterdir()) == sorted(f"{s}.gz" for s in FILES.values())
    assert len(load_idx_dir(directory)["train_labels"]) == 60_000  # MD5-checked on reading


def test_a_mirror_with_wrong_content_installs_nothing(tmp_path, serve, monkeypatch):
    bad = tmp_path / "bad"
    bad.mkdir()
    for stem in FILES.values():
        (bad / f"{stem}.gz").write_bytes(b"not mnist at all")
    monkeypatch.setattr(data, "MIRRORS", (serve(bad),))
    monkeypatch.setattr(data.shutil, "which", lambda name: None)  # no npm either
    target = tmp_path / "cache"
    with pytest.raises(StochoptError, match=r"could not download .*put the four MNIST IDX"):
        data.fetch_mnist(target)
    assert list(target.iterdir()) == []  # no partial or unverified file left behind
