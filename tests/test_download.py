"""Downloads through huggingface_hub against a local server that answers the Hub's
`resolve` endpoint (no real network), and the document split of a downloaded text."""

import errno
import gzip
import hashlib
import http.server
import random
import re
import socket
import subprocess
import sys
import threading
from collections import namedtuple
from pathlib import Path

import pytest
from huggingface_hub import constants

import cs336_basics.download as dl
from cs336_basics.download import (
    DATASETS,
    TINYSTORIES_VALID,
    DownloadError,
    fetch,
    fetch_dataset,
    fetch_tinystories_valid,
    split_documents,
)

ROOT = Path(__file__).resolve().parents[1]
PAYLOAD = random.Random(0).randbytes(300_000)
OWT_TEXT = b"an OpenWebText line\n" * 5_000
COMMIT = "0123456789abcdef0123456789abcdef01234567"


class FakeHub(http.server.BaseHTTPRequestHandler):
    """HEAD and GET on /datasets/<repo>/resolve/main/<file> with what hf_hub_download reads:
    ETag, X-Repo-Commit, Content-Length, and Range / Content-Range on GET. It can cut its
    first GET body short (`cut_after`) or serve a body shorter than announced (`short_by`)."""

    def do_HEAD(self):
        self._answer(head=True)

    def do_GET(self):
        self._answer(head=False)

    def _answer(self, head: bool):
        srv = self.server
        srv.requests.append((self.command, self.headers.get("Range")))
        m = re.fullmatch(r"/datasets/(.+)/resolve/main/(.+)", self.path)
        body = srv.files.get(f"{m[1]}/{m[2]}") if m else None
        if body is None:
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self.send_response(200 if head or not self.headers.get("Range") else 206)
        self.send_header("ETag", f'"{hashlib.sha256(body).hexdigest()}"')
        self.send_header("X-Repo-Commit", COMMIT)
        if head:
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            return
        body = body[: len(body) - srv.short_by]
        start = int(re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range") or "bytes=0-")[1])
        if start:
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        self.send_header("Content-Length", str(len(body) - start))
        self.end_headers()
        cut, srv.cut_after = srv.cut_after, None
        self.wfile.write(body[start : None if cut is None else start + cut])

    def log_message(self, *args):
        pass


@pytest.fixture
def hub():
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), FakeHub)
    srv.files = {
        f"{TINYSTORIES_VALID.repo_id}/{TINYSTORIES_VALID.remote}": PAYLOAD,
        "stanford-cs336/owt-sample/owt_valid.txt.gz": gzip.compress(OWT_TEXT),
        "stanford-cs336/owt-sample/owt_train.txt.gz": gzip.compress(OWT_TEXT[:1000]),
    }
    srv.requests, srv.cut_after, srv.short_by = [], None, 0
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield srv, f"http://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()
    srv.server_close()


@pytest.fixture
def refused() -> str:
    """The address of a port that nothing listens on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"


def _visible(folder) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name != ".cache")


def test_download_lands_under_its_own_name(hub, tmp_path):
    srv, endpoint = hub
    path = fetch(TINYSTORIES_VALID, tmp_path, endpoint=endpoint, progress=False)
    assert path == tmp_path / "TinyStoriesV2-GPT4-valid.txt"
    assert path.read_bytes() == PAYLOAD
    assert _visible(tmp_path) == ["TinyStoriesV2-GPT4-valid.txt"]
    assert [method for method, _ in srv.requests] == ["HEAD", "HEAD", "GET"]  # ours, the library's
    # A file in place is done: no request at all.
    assert fetch(TINYSTORIES_VALID, tmp_path, endpoint=endpoint, progress=False) == path
    assert len(srv.requests) == 3


def test_dropped_transfer_resumes_where_it_stopped(monkeypatch, hub, tmp_path):
    """The library writes what it received in chunks (10 MiB; 16 KiB here), so it resumes
    from the last whole chunk before the cut."""
    srv, endpoint = hub
    monkeypatch.setattr(constants, "DOWNLOAD_CHUNK_SIZE", 1 << 14)
    srv.cut_after = 100_000
    path = fetch(TINYSTORIES_VALID, tmp_path, endpoint=endpoint, progress=False)
    assert path.read_bytes() == PAYLOAD
    [first, second] = [r for r in srv.requests if r[0] == "GET"]
    assert first == ("GET", None)
    assert 100_000 - (1 << 14) <= int(re.fullmatch(r"bytes=(\d+)-", second[1])[1]) <= 100_000


def test_file_shorter_than_announced_is_an_error_and_not_kept(hub, tmp_path):
    srv, endpoint = hub
    srv.short_by = 1_000
    with pytest.raises(DownloadError, match="size 300000 but has size 299000.*Nothing was kept"):
        fetch(TINYSTORIES_VALID, tmp_path, endpoint=endpoint, progress=False)
    assert _visible(tmp_path) == []
    assert not list(tmp_path.rglob("*.incomplete"))


def test_gzipped_files_are_decompressed(hub, tmp_path):
    _, endpoint = hub
    paths = fetch_dataset("owt", tmp_path, endpoint=endpoint, progress=False)
    assert [p.name for p in paths] == ["owt_train.txt", "owt_valid.txt"]
    assert paths[1].read_bytes() == OWT_TEXT and paths[0].read_bytes() == OWT_TEXT[:1000]
    assert _visible(tmp_path) == ["owt_train.txt", "owt_valid.txt"]  # the .gz files are gone
    assert [s.filename for s in DATASETS["owt"]] == ["owt_train.txt", "owt_valid.txt"]


def test_truncated_gzip_is_removed_with_a_clear_error(hub, tmp_path):
    srv, endpoint = hub
    srv.files["stanford-cs336/owt-sample/owt_valid.txt.gz"] = gzip.compress(OWT_TEXT)[:-100]
    with pytest.raises(DownloadError, match="owt_valid.txt.gz is not a whole gzip file"):
        fetch(DATASETS["owt"][1], tmp_path, endpoint=endpoint, progress=False)
    assert _visible(tmp_path) == []


def test_offline_is_a_clear_error_at_once(refused, tmp_path):
    with pytest.raises(DownloadError, match=r"cannot reach http://127.0.0.1:\d+ .*online"):
        fetch(TINYSTORIES_VALID, tmp_path, endpoint=refused, progress=False)
    assert _visible(tmp_path) == []


def test_hf_hub_offline_is_named(monkeypatch, hub, tmp_path):
    _, endpoint = hub
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(DownloadError, match="HF_HUB_OFFLINE is set"):
        fetch(TINYSTORIES_VALID, tmp_path, endpoint=endpoint, progress=False)


def test_missing_file_is_reported(hub, tmp_path):
    _, endpoint = hub
    with pytest.raises(DownloadError, match="404"):
        fetch(dl.Source("nobody/nothing", "x.txt"), tmp_path, endpoint=endpoint, progress=False)


def test_too_little_disk_space_is_refused_before_downloading(monkeypatch, hub, tmp_path):
    srv, endpoint = hub
    monkeypatch.setattr(dl, "disk_usage", lambda _: namedtuple("Usage", "free")(free=1_000))
    with pytest.raises(DownloadError, match="0 MB free; free some space"):
        fetch(TINYSTORIES_VALID, tmp_path, endpoint=endpoint, progress=False)
    assert [method for method, _ in srv.requests] == ["HEAD"]


def test_disk_full_during_download_is_named(monkeypatch, hub, tmp_path):
    _, endpoint = hub

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(dl, "hf_hub_download", full)
    with pytest.raises(DownloadError, match="is full; free some space"):
        fetch(TINYSTORIES_VALID, tmp_path, endpoint=endpoint, progress=False)


def test_fetch_tinystories_valid(hub, tmp_path):
    srv, endpoint = hub
    said = []
    path = fetch_tinystories_valid(tmp_path, endpoint=endpoint, progress=False, say=said.append)
    assert path.read_bytes() == PAYLOAD and said == []


def test_fetch_tinystories_valid_offline_says_why_in_one_line(refused, tmp_path):
    said = []
    assert fetch_tinystories_valid(tmp_path, endpoint=refused, say=said.append) is None
    [line] = said
    assert "cannot reach" in line and "\n" not in line
    # A file already in place needs no network.
    (tmp_path / TINYSTORIES_VALID.filename).write_text("a story")
    assert (
        fetch_tinystories_valid(tmp_path, endpoint=refused) == tmp_path / TINYSTORIES_VALID.filename
    )


def test_fetch_tinystories_valid_gives_up_on_a_silent_hub(tmp_path):
    with socket.socket() as s:  # accepts connections (the kernel's backlog), never answers
        s.bind(("127.0.0.1", 0))
        s.listen()
        said = []
        endpoint = f"http://127.0.0.1:{s.getsockname()[1]}"
        assert fetch_tinystories_valid(tmp_path, 0.3, endpoint=endpoint, say=said.append) is None
    assert "cannot reach" in said[0]


def _docs(n: int) -> list[str]:
    rng = random.Random(n)
    return [
        f"\nstory {i}: " + "é words\r\n" * rng.randrange(1, 4) + "\n<|endoftext|>" for i in range(n)
    ]


def test_split_documents_is_even_whole_and_deterministic(tmp_path):
    docs = _docs(95)
    (tmp_path / "all.txt").write_text("".join(docs) + "\n  \n", encoding="utf-8", newline="")
    counts = split_documents(tmp_path / "all.txt", tmp_path / "t.txt", tmp_path / "v.txt")
    assert counts == (86, 9)
    valid = [d for i, d in enumerate(docs) if i % 10 == 9]
    train = [d for i, d in enumerate(docs) if i % 10 != 9]
    assert (tmp_path / "v.txt").read_bytes().decode() == "".join(valid)
    assert (tmp_path / "t.txt").read_bytes().decode() == "".join(train)


def test_documents_are_found_across_read_chunks(tmp_path):
    docs = _docs(30)
    (tmp_path / "all.txt").write_text("".join(docs) + "a last one", encoding="utf-8", newline="")
    for chunk in (5, 13, 1 << 20):
        found = list(dl._documents(tmp_path / "all.txt", "<|endoftext|>", chunk_chars=chunk))
        assert found == docs + ["a last one"]


def test_split_documents_refuses_too_few_documents(tmp_path):
    (tmp_path / "all.txt").write_text("".join(_docs(5)), encoding="utf-8")
    with pytest.raises(ValueError, match="5 documents.*too few"):
        split_documents(tmp_path / "all.txt", tmp_path / "t.txt", tmp_path / "v.txt")
    assert _visible(tmp_path) == ["all.txt"]


def test_script_fetches_and_exits_with_the_error(hub, refused, tmp_path, capsys):
    _, endpoint = hub
    script = [sys.executable, str(ROOT / "script/download_data.py")]
    done = subprocess.run([*script, "--only", "owt", "--out", str(tmp_path), "--endpoint", endpoint],
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.returncode == 0 and "owt_valid.txt  (0.1 MB)" in done.stdout, done.stderr
    done = subprocess.run(
        [*script, "--only", "tinystories", "--out", str(tmp_path), "--endpoint", refused],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 1 and "error: cannot reach" in done.stderr
