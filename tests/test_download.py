"""Downloader against a local HTTP server that honours Range (no real network)."""

import gzip
import http.server
import random
import re
import socket
import threading

import pytest

from cs336_basics.download import DownloadError, Source, download, fetch

PAYLOAD = random.Random(0).randbytes(300_000)


class RangeHandler(http.server.BaseHTTPRequestHandler):
    """Serves `server.files[path]`, honouring `Range: bytes=N-`; can cut the first reply short."""

    def do_GET(self):
        srv = self.server
        srv.ranges.append(self.headers.get("Range"))
        body = srv.files.get(self.path)
        if body is None:
            self.send_error(404)
            return
        start = 0
        if m := re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range") or ""):
            start = int(m.group(1))
            if start >= len(body):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(body)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(len(body) - start))
        self.end_headers()
        if srv.cut_after is not None:  # announce everything, send only part, hang up
            cut, srv.cut_after = srv.cut_after, None
            self.wfile.write(body[start : start + cut])
            self.close_connection = True
            return
        self.wfile.write(body[start:])

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), RangeHandler)
    srv.files = {"/file.bin": PAYLOAD, "/file.txt.gz": gzip.compress(b"hello\n" * 1000)}
    srv.ranges, srv.cut_after = [], None
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield srv, f"http://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()
    srv.server_close()


def test_download_whole_file(server, tmp_path):
    srv, base = server
    out = download(f"{base}/file.bin", tmp_path / "f.bin", progress=False)
    assert out.read_bytes() == PAYLOAD
    assert not (tmp_path / "f.bin.part").exists()
    assert srv.ranges == [None]


def test_resumes_partial_part_file_with_range(server, tmp_path):
    srv, base = server
    (tmp_path / "f.bin.part").write_bytes(PAYLOAD[:123_456])
    out = download(f"{base}/file.bin", tmp_path / "f.bin", progress=False)
    assert out.read_bytes() == PAYLOAD
    assert srv.ranges == ["bytes=123456-"]


def test_short_read_is_retried_from_where_it_stopped(server, tmp_path):
    srv, base = server
    srv.cut_after = 100_000
    out = download(f"{base}/file.bin", tmp_path / "f.bin", retry_wait=0, progress=False)
    assert out.read_bytes() == PAYLOAD
    assert srv.ranges == [None, "bytes=100000-"]


def test_short_read_without_retries_keeps_part_and_says_so(server, tmp_path):
    srv, base = server
    srv.cut_after = 50_000
    with pytest.raises(DownloadError, match="run again to resume"):
        download(f"{base}/file.bin", tmp_path / "f.bin", retries=0, progress=False)
    assert (tmp_path / "f.bin.part").read_bytes() == PAYLOAD[:50_000]
    assert not (tmp_path / "f.bin").exists()


def test_complete_part_file_is_finished_on_416(server, tmp_path):
    srv, base = server
    (tmp_path / "f.bin.part").write_bytes(PAYLOAD)
    assert download(f"{base}/file.bin", tmp_path / "f.bin", progress=False).read_bytes() == PAYLOAD


def test_http_error_is_reported(server, tmp_path):
    _, base = server
    with pytest.raises(DownloadError, match="HTTP 404"):
        download(f"{base}/missing", tmp_path / "m", progress=False)


def test_gzipped_source_is_decompressed(server, tmp_path):
    _, base = server
    out = fetch(Source(f"{base}/file.txt.gz", "file.txt", gzipped=True), tmp_path, progress=False)
    assert out.read_bytes() == b"hello\n" * 1000
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file.txt"]


def test_connection_refused_gives_clear_error(tmp_path):
    with socket.socket() as s:  # a port that nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(DownloadError, match="cannot reach 127.0.0.1.*online"):
        download(f"http://127.0.0.1:{port}/x", tmp_path / "x", progress=False)
    assert list(tmp_path.iterdir()) == []
