"""``sam2s download`` against a real HTTP server on 127.0.0.1 (http.server in a thread).

The server serves a good file, a truncated one (Content-Length larger than the bytes sent)
and the good file under a wrong expected hash; a closed port stands in for "offline".
"""

from __future__ import annotations

import dataclasses
import hashlib
import http.server
import socket
import threading
import time

import numpy as np
import pytest

from sam2s_ros.model.download import (
    CHECKPOINTS,
    SAM2P1_BASE_URL,
    CheckpointSource,
    DownloadError,
    download_checkpoint,
)
from sam2s_ros.tools import cli

PAYLOAD = np.random.default_rng(0).integers(0, 256, 300_000, dtype=np.uint8).tobytes()
PAYLOAD_SHA256 = hashlib.sha256(PAYLOAD).hexdigest()
FILENAME = "sam2.1_hiera_tiny.pt"


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 (http.server's name)
        if self.path == "/good.pt":
            self._send(PAYLOAD, len(PAYLOAD))
        elif self.path == "/truncated.pt":
            self._send(PAYLOAD[: len(PAYLOAD) // 3], len(PAYLOAD))
        else:
            self.send_error(404, "not found")

    def _send(self, body: bytes, length: int) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(length))
        self.end_headers()
        self.wfile.write(body)
        self.wfile.flush()
        self.close_connection = True

    def log_message(self, *args):  # keep the test output clean
        pass


@pytest.fixture(scope="module")
def server_url():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()
    thread.join(10)


def _sources(url: str, sha256=None) -> dict[str, CheckpointSource]:
    return {"tiny": dataclasses.replace(CHECKPOINTS["tiny"], url=url, sha256=sha256)}


def _leftovers(folder) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name != FILENAME)


def test_table_holds_the_official_urls_and_no_invented_hashes():
    assert list(CHECKPOINTS) == ["tiny", "small", "base_plus", "large"]
    for size, source in CHECKPOINTS.items():
        assert source.model_size == size
        assert source.url == f"{SAM2P1_BASE_URL}/sam2.1_hiera_{size}.pt"
        assert SAM2P1_BASE_URL == "https://dl.fbaipublicfiles.com/segment_anything_2/092824"
        # Meta publishes no sha256 for these files: a hash here must come from a cited source
        assert source.sha256 is None


def test_good_file_with_known_hash(server_url, tmp_path):
    seen = []
    result = download_checkpoint(
        "tiny",
        tmp_path / "models",
        sources=_sources(f"{server_url}/good.pt", PAYLOAD_SHA256),
        progress=lambda done, total: seen.append((done, total)),
    )
    assert result.path == tmp_path / "models" / FILENAME
    assert result.path.read_bytes() == PAYLOAD
    assert (result.sha256, result.verified, result.downloaded, result.size_bytes) == (
        PAYLOAD_SHA256,
        True,
        True,
        len(PAYLOAD),
    )
    assert seen[-1] == (len(PAYLOAD), len(PAYLOAD))
    assert _leftovers(tmp_path / "models") == []


def test_good_file_without_known_hash_reports_its_hash(server_url, tmp_path):
    result = download_checkpoint("tiny", tmp_path, sources=_sources(f"{server_url}/good.pt"))
    assert result.verified is False
    assert result.sha256 == PAYLOAD_SHA256


def test_truncated_download_saves_nothing(server_url, tmp_path):
    with pytest.raises(DownloadError, match=r"truncated|interrupted") as err:
        download_checkpoint("tiny", tmp_path, sources=_sources(f"{server_url}/truncated.pt"))
    assert "nothing was saved" in str(err.value)
    assert list(tmp_path.iterdir()) == []  # no checkpoint, no temporary file


def test_wrong_hash_saves_nothing(server_url, tmp_path):
    with pytest.raises(DownloadError, match="does not match the expected") as err:
        download_checkpoint("tiny", tmp_path, sources=_sources(f"{server_url}/good.pt", "0" * 64))
    assert PAYLOAD_SHA256 in str(err.value)
    assert list(tmp_path.iterdir()) == []


def test_http_error(server_url, tmp_path):
    with pytest.raises(DownloadError, match="HTTP 404"):
        download_checkpoint("tiny", tmp_path, sources=_sources(f"{server_url}/missing.pt"))
    assert list(tmp_path.iterdir()) == []


def test_offline_fails_at_once_with_manual_instructions(tmp_path):
    with socket.socket() as s:  # a port nobody listens on: connection refused, as offline
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    start = time.monotonic()
    with pytest.raises(DownloadError) as err:
        download_checkpoint("tiny", tmp_path, sources=_sources(f"http://127.0.0.1:{port}/x.pt"))
    assert time.monotonic() - start < 5.0
    message = str(err.value)
    assert "offline?" in message
    assert f"curl -fL -o {FILENAME} http://127.0.0.1:{port}/x.pt" in message
    assert f"-p checkpoint:={tmp_path / FILENAME} -p model_size:=tiny" in message
    assert list(tmp_path.iterdir()) == []


def test_existing_file_is_kept_unless_forced(server_url, tmp_path):
    (tmp_path / FILENAME).write_bytes(b"old")
    kept = download_checkpoint("tiny", tmp_path, sources=_sources(f"{server_url}/good.pt"))
    assert (kept.downloaded, kept.path.read_bytes()) == (False, b"old")
    with pytest.raises(DownloadError, match="--force"):
        download_checkpoint("tiny", tmp_path, sources=_sources(f"{server_url}/good.pt", PAYLOAD_SHA256))
    again = download_checkpoint("tiny", tmp_path, sources=_sources(f"{server_url}/good.pt"), force=True)
    assert (again.downloaded, again.path.read_bytes()) == (True, PAYLOAD)
    assert _leftovers(tmp_path) == []


def test_failed_forced_download_keeps_the_old_file(server_url, tmp_path):
    (tmp_path / FILENAME).write_bytes(b"old")
    with pytest.raises(DownloadError):
        download_checkpoint("tiny", tmp_path, sources=_sources(f"{server_url}/truncated.pt"), force=True)
    assert (tmp_path / FILENAME).read_bytes() == b"old"  # atomic: the rename never happened
    assert _leftovers(tmp_path) == []


def test_unknown_size(tmp_path):
    with pytest.raises(DownloadError, match="unknown checkpoint 'huge'"):
        download_checkpoint("huge", tmp_path)


def test_cli(server_url, tmp_path, capsys):
    args = ["download", "tiny", "--dir", str(tmp_path), "--url", f"{server_url}/good.pt"]
    assert cli.main(args) == 0
    out = capsys.readouterr().out
    assert f"downloaded: {tmp_path / FILENAME}" in out
    assert f"sha256 {PAYLOAD_SHA256} (no published hash" in out
    assert "-p model_size:=tiny" in out
    assert cli.main(args + ["--force", "--sha256", "f" * 64]) == 2  # DownloadError -> exit code 2
    assert "does not match" in capsys.readouterr().err
    assert (tmp_path / FILENAME).read_bytes() == PAYLOAD


def test_cli_help_lists_sizes(capsys):
    assert cli.main(["download", "--help"]) == 0
    out = capsys.readouterr().out
    assert "{tiny,small,base_plus,large}" in out
