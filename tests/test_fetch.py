"""Fetching MNIST into the cache, served from a loopback HTTP server (no network needed):
checksums decide what is installed, and a failed fetch ends in one clear message.

The servers and the fetches run in a network namespace of their own that has only loopback
(``unshare -n``): outside one, the module's tests run once more inside one (a pytest
subprocess) and each passes when its run there passed."""

import functools
import http.server
import os
import shutil
import subprocess
import sys
import threading
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from conftest import mnist_dir

from stochopt.data import FILES, idx, load_idx_dir, resolve_data_dir
from stochopt.errors import StochoptError

REQUESTS: list[str] = []  # every path the loopback mirrors were asked for
INSIDE = os.environ.get("STOCHOPT_TEST_LOOPBACK_ONLY") == "1"


@functools.cache
def _inside_results(base: Path, data: Path) -> dict[str, str]:
    """Run this module in a loopback-only network namespace (its files under ``base``, the
    real MNIST from ``data``): test name -> failure text ("" when it passed). ``data`` goes
    by name: this test's environment points the caches at its temporary folder, where the
    run inside would not find MNIST and would fetch it, without a network (npm retried for
    3.5 minutes on an empty home before falling back on its own cache)."""
    if shutil.which("unshare") is None:
        pytest.skip("unshare (util-linux) is not installed: no loopback-only namespace")
    report = base / "loopback_only.xml"
    proc = subprocess.run(
        ["unshare", "-n", "sh", "-c", 'ip link set lo up && exec "$0" -m pytest -q '
         '-p no:cacheprovider "$1" --junitxml "$2" --basetemp "$3"', sys.executable,
         __file__, str(report), str(base / "inside")],
        env={**os.environ, "STOCHOPT_TEST_LOOPBACK_ONLY": "1", "STOCHOPT_DATA": str(data)},
        capture_output=True, text=True, timeout=900)
    if not report.is_file():
        pytest.skip(f"no loopback-only network namespace here: {proc.stderr.strip()[-300:]}")
    results = {}
    for case in ET.parse(report).iter("testcase"):
        failed = case.find("failure") if case.find("failure") is not None else case.find("error")
        results[case.get("name")] = "" if failed is None else failed.get("message", "failed")
    return results


def loopback_only(test):
    """Inside the namespace, the test itself; outside, its outcome there (no fixture of its
    own is set up out here)."""
    if INSIDE:
        return test

    def outcome_inside(tmp_path_factory, data_dir):
        failure = _inside_results(tmp_path_factory.getbasetemp(), data_dir).get(test.__name__)
        assert failure == "", f"{test.__name__} inside the namespace: {failure}"
    outcome_inside.__name__ = outcome_inside.__qualname__ = test.__name__
    outcome_inside.__doc__ = test.__doc__
    return outcome_inside


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


@loopback_only
def test_fetch_verifies_and_installs_the_real_files(mirror_dir, serve, monkeypatch, tmp_path):
    monkeypatch.setattr(idx, "MIRRORS", ("http://127.0.0.1:9/", serve(mirror_dir)))  # 1st fails
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("STOCHOPT_DATA", raising=False)
    directory = resolve_data_dir()
    assert directory == tmp_path / "cache" / "stochopt" / "mnist"
    assert sorted(p.name for p in directory.iterdir()) == sorted(f"{s}.gz" for s in FILES.values())
    assert len(load_idx_dir(directory)["train_labels"]) == 60_000  # MD5-checked on reading


@loopback_only
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


@loopback_only
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
