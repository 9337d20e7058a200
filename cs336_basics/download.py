"""Resumable downloads of the assignment's corpora (TinyStories V2-GPT4, the OpenWebText sample).

Bytes stream into `<name>.part`; an interrupted or short transfer is resumed with an HTTP
Range request, and only a transfer whose size matches the server's Content-Length is renamed
to its final name. Standard library only (urllib), so it works on a bare install.
"""

import gzip
import http.client
import os
import re
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from cs336_basics.fileio import atomic_write

_HF = "https://huggingface.co/datasets"


@dataclass(frozen=True)
class Source:
    """One remote file; `gzipped` files are decompressed to `filename` after download."""

    url: str
    filename: str
    gzipped: bool = False


DATASETS: dict[str, list[Source]] = {
    "tinystories": [
        Source(
            f"{_HF}/roneneldan/TinyStories/resolve/main/TinyStoriesV2-GPT4-train.txt",
            "TinyStoriesV2-GPT4-train.txt",
        ),
        Source(
            f"{_HF}/roneneldan/TinyStories/resolve/main/TinyStoriesV2-GPT4-valid.txt",
            "TinyStoriesV2-GPT4-valid.txt",
        ),
    ],
    "owt": [
        Source(
            f"{_HF}/stanford-cs336/owt-sample/resolve/main/owt_train.txt.gz",
            "owt_train.txt",
            gzipped=True,
        ),
        Source(
            f"{_HF}/stanford-cs336/owt-sample/resolve/main/owt_valid.txt.gz",
            "owt_valid.txt",
            gzipped=True,
        ),
    ],
}


class DownloadError(OSError):
    """A download that cannot complete; the message says why and what to do."""


def _total_from_headers(resp: http.client.HTTPResponse, offset: int) -> int | None:
    """Full file size from Content-Range (a 206 reply) or Content-Length (a 200 reply)."""
    content_range = resp.headers.get("Content-Range")
    if content_range:
        m = re.fullmatch(r"bytes (\d+)-\d+/(\d+|\*)", content_range.strip())
        if not m or int(m.group(1)) != offset:
            raise DownloadError(
                f"server answered a request for bytes {offset}- with Content-Range {content_range!r}"
            )
        return None if m.group(2) == "*" else int(m.group(2))
    length = resp.headers.get("Content-Length")
    return int(length) + offset if length is not None else None


def _size_from_416(e: urllib.error.HTTPError) -> int | None:
    """The full size a 416 (range not satisfiable) reply states as `Content-Range: bytes */N`."""
    m = re.fullmatch(r"bytes \*/(\d+)", (e.headers.get("Content-Range") or "").strip())
    return int(m.group(1)) if m else None


def _open(url: str, offset: int, timeout: float) -> http.client.HTTPResponse:
    headers = {"User-Agent": "cs336-basics-downloader", "Accept-Encoding": "identity"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    return urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout)


def download(
    url: str,
    dest: str | os.PathLike,
    *,
    retries: int = 5,
    retry_wait: float = 2.0,
    timeout: float = 60.0,
    chunk_bytes: int = 1 << 20,
    progress: bool = True,
) -> Path:
    """Fetch `url` to `dest`, resuming from `dest.part` if an earlier attempt left one.

    A transfer that ends short of the announced size (dropped connection, timeout) is retried
    from where it stopped, up to `retries` times, waiting `retry_wait * attempt` seconds.
    An existing `dest` is taken as done. Raises `DownloadError` with a readable message when
    the server cannot be reached at all (no network), answers with an HTTP error, or the size
    never matches.
    """
    dest = Path(dest)
    if dest.exists():
        return dest
    part = dest.with_name(dest.name + ".part")
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DownloadError(
            f"cannot create {dest.parent}: {e.strerror or e}; choose a writable --out folder"
        ) from None
    connected = False  # only a link that worked once in this call is worth retrying
    problem = "no attempt made"
    for attempt in range(retries + 1):
        if attempt:
            time.sleep(retry_wait * attempt)
        offset = part.stat().st_size if part.exists() else 0
        try:
            resp = _open(url, offset, timeout)
        except urllib.error.HTTPError as e:
            if e.code == 416 and offset:  # asked past the end: the .part is already whole, or bogus
                total = _size_from_416(e)
                if total == offset:
                    os.replace(part, dest)
                    return dest
                part.unlink()
                problem = f"server refused to resume at byte {offset}; restarting from zero"
                continue
            if e.code >= 500:  # the server's trouble, often brief
                problem = f"HTTP {e.code} {e.reason}"
                continue
            raise DownloadError(f"{url}: HTTP {e.code} {e.reason}") from None
        except (urllib.error.URLError, OSError, http.client.HTTPException) as e:
            reason = getattr(e, "reason", e)
            if not connected:
                raise DownloadError(
                    f"cannot reach {urllib.parse.urlsplit(url).netloc}: {reason}. Is this machine "
                    "online? Nothing was lost: run again when the network is back and any partial "
                    "download resumes."
                ) from None
            problem = f"connection failed: {reason}"
            continue
        connected = True
        with resp:
            if offset and resp.status != 206:  # the server ignored Range: start over
                offset = 0
            total = _total_from_headers(resp, offset)
            try:
                with (
                    open(part, "ab" if offset else "wb") as f,
                    tqdm(
                        total=total,
                        initial=offset,
                        unit="B",
                        unit_scale=True,
                        unit_divisor=1024,
                        desc=dest.name,
                        disable=not progress,
                    ) as bar,
                ):
                    while chunk := resp.read(chunk_bytes):
                        f.write(chunk)
                        bar.update(len(chunk))
            except (OSError, http.client.HTTPException) as e:  # dropped link, timeout, short body
                problem = f"transfer interrupted: {e!r}"
                continue
        size = part.stat().st_size
        if total is None or size == total:
            os.replace(part, dest)
            return dest
        if size > total:
            part.unlink()
            raise DownloadError(
                f"{url}: received {size} bytes but the server announced {total}; removed the partial file"
            )
        problem = f"short read: {size} of {total} bytes"
    raise DownloadError(
        f"{url}: gave up after {retries + 1} attempts ({problem}); run again to resume from {part}"
    )


def gunzip(src: Path, dest: Path, *, progress: bool = True) -> Path:
    """Decompress `src` into `dest` atomically, then delete `src`."""
    with (
        gzip.open(src, "rb") as fin,
        atomic_write(dest, "wb") as fout,
        tqdm(
            total=src.stat().st_size,
            unit="B",
            unit_scale=True,
            desc=f"gunzip {src.name}",
            disable=not progress,
        ) as bar,
    ):
        raw = fin.fileobj  # compressed-side position drives the progress bar
        last = 0
        while chunk := fin.read(1 << 20):
            fout.write(chunk)
            bar.update(raw.tell() - last)
            last = raw.tell()
    src.unlink()
    return dest


def fetch(source: Source, out: str | os.PathLike, **download_options) -> Path:
    """Download one `Source` into folder `out` (decompressing if gzipped); returns the final path."""
    dest = Path(out) / source.filename
    if dest.exists():
        return dest
    if not source.gzipped:
        return download(source.url, dest, **download_options)
    gz = download(source.url, dest.with_name(dest.name + ".gz"), **download_options)
    return gunzip(gz, dest, progress=download_options.get("progress", True))


def fetch_dataset(name: str, out: str | os.PathLike = "data", **download_options) -> list[Path]:
    """Fetch every file of `DATASETS[name]` into `out`; returns their paths."""
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; choose one of {sorted(DATASETS)}")
    return [fetch(s, out, **download_options) for s in DATASETS[name]]
