"""The assignment's corpora, TinyStories V2-GPT4 and the OpenWebText sample, from the Hugging
Face Hub into a local folder (data/ by default), under their own names.

Transfers go through `huggingface_hub.hf_hub_download` into the folder itself (`local_dir`;
its bookkeeping lives in `<folder>/.cache/huggingface/`), so they honour HF_ENDPOINT (a
mirror) and HF_TOKEN or a saved `hf auth login`, and a dropped connection resumes from the
byte where it stopped (the library retries a few times; a process that is killed starts the
file over). Around it: one short metadata request first, so that an offline machine gets a
clear answer in seconds rather than after the library's retries, and whose announced size
is checked against the free disk space (the library checks it against the file received);
gzipped files are decompressed; every failure is a `DownloadError` that says what happened and what to do.
"""

import errno
import gzip
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from shutil import disk_usage

import httpx2  # huggingface_hub's HTTP client: its network errors reach us as they are
from huggingface_hub import constants, get_hf_file_metadata, hf_hub_download, hf_hub_url
from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled
from tqdm import tqdm

from cs336_basics.fileio import atomic_write


@dataclass(frozen=True)
class Source:
    """One file of a Hub dataset repo; a gzipped one is decompressed to its name without .gz."""

    repo_id: str
    remote: str
    gzipped: bool = False

    @property
    def filename(self) -> str:
        """The name of the (decompressed) file in the local folder."""
        return self.remote.removesuffix(".gz") if self.gzipped else self.remote


DATASETS: dict[str, list[Source]] = {
    "tinystories": [
        Source("roneneldan/TinyStories", "TinyStoriesV2-GPT4-train.txt"),
        Source("roneneldan/TinyStories", "TinyStoriesV2-GPT4-valid.txt"),
    ],
    "owt": [
        Source("stanford-cs336/owt-sample", "owt_train.txt.gz", gzipped=True),
        Source("stanford-cs336/owt-sample", "owt_valid.txt.gz", gzipped=True),
    ],
}
TINYSTORIES_VALID = DATASETS["tinystories"][1]  # about 22 MB


class DownloadError(OSError):
    """A download that cannot complete; the message says why and what to do."""


def _first_line(e: BaseException) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0]


def remote_size(
    source: Source, *, endpoint: str | None = None, timeout: float = 10.0
) -> int | None:
    """The size the Hub announces for `source` (None if it does not say), from one metadata
    request that waits at most `timeout` seconds for an answer."""
    host = endpoint or constants.ENDPOINT
    url = hf_hub_url(source.repo_id, source.remote, repo_type="dataset", endpoint=endpoint)
    try:
        return get_hf_file_metadata(url, timeout=timeout, endpoint=endpoint).size
    except OfflineModeIsEnabled:
        raise DownloadError(
            "HF_HUB_OFFLINE is set, so nothing can be downloaded; unset it, or put the file "
            "in place yourself"
        ) from None
    except httpx2.TransportError as e:
        why = (
            f"no answer in {timeout:g} s"
            if isinstance(e, httpx2.TimeoutException)
            else _first_line(e)
        )
        raise DownloadError(
            f"cannot reach {host} ({why}). Is this machine online? (HF_ENDPOINT selects a "
            "mirror.) Run again when the network is back."
        ) from None
    except HfHubHTTPError as e:  # 401/403: a gated repo or a bad token; 404: moved or renamed
        raise DownloadError(f"{url}: {_first_line(e)}") from None


def download(
    source: Source,
    out: str | os.PathLike,
    *,
    endpoint: str | None = None,
    timeout: float = 10.0,
    progress: bool = True,
) -> Path:
    """Fetch `source` as it is on the Hub (still gzipped) to `out/source.remote`.

    `endpoint`: the Hub's address (default: HF_ENDPOINT, else huggingface.co). `timeout`:
    seconds to wait for the first answer. Raises DownloadError when the Hub cannot be reached,
    refuses the file, the disk lacks room, or the file does not arrive whole.
    """
    out = Path(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DownloadError(
            f"cannot create {out}: {e.strerror or e}; choose a writable folder"
        ) from None
    size = remote_size(source, endpoint=endpoint, timeout=timeout)
    if size is not None and (free := disk_usage(out).free) < size:
        raise DownloadError(
            f"{source.remote} is {size / 1e6:,.0f} MB but {out} has {free / 1e6:,.0f} MB free; "
            "free some space or choose another folder"
        )
    try:
        # The library checks the received size against the announced one.
        path = Path(
            hf_hub_download(
                source.repo_id,
                source.remote,
                repo_type="dataset",
                local_dir=out,
                endpoint=endpoint,
                etag_timeout=timeout,
                tqdm_class=None if progress else partial(tqdm, disable=True),
            )
        )
    except (OSError, httpx2.TransportError) as e:  # the transport: dropped too many times
        if getattr(e, "errno", None) == errno.ENOSPC:
            raise DownloadError(
                f"the disk holding {out} is full; free some space and run again"
            ) from None
        raise DownloadError(
            f"downloading {source.remote} failed: {_first_line(e).rstrip('.')}. Nothing was "
            "kept; run again."
        ) from None
    return path


def gunzip(src: Path, dest: Path, *, progress: bool = True) -> Path:
    """Decompress `src` into `dest` atomically, then delete `src`."""
    try:
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
    except (EOFError, gzip.BadGzipFile) as e:
        src.unlink()
        raise DownloadError(
            f"{src} is not a whole gzip file ({e}); removed it, run again"
        ) from None
    except OSError as e:
        if e.errno == errno.ENOSPC:
            raise DownloadError(
                f"the disk filled up while decompressing {src} (kept); free some space and "
                "run again"
            ) from None
        raise
    src.unlink()
    return dest


def fetch(source: Source, out: str | os.PathLike, **download_options) -> Path:
    """`out/source.filename`, downloaded (and decompressed) unless it is already there."""
    dest = Path(out) / source.filename
    if dest.exists():
        return dest
    path = download(source, out, **download_options)
    if not source.gzipped:
        return path
    return gunzip(path, dest, progress=download_options.get("progress", True))


def fetch_dataset(name: str, out: str | os.PathLike = "data", **download_options) -> list[Path]:
    """Fetch every file of `DATASETS[name]` into `out`; returns their paths."""
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; choose one of {sorted(DATASETS)}")
    return [fetch(s, out, **download_options) for s in DATASETS[name]]


def fetch_tinystories_valid(
    data_dir: str | os.PathLike = "data",
    timeout_s: float = 5.0,
    *,
    endpoint: str | None = None,
    progress: bool = True,
    say: Callable[[str], object] = print,
) -> Path | None:
    """The TinyStories V2-GPT4 validation file (about 22 MB) in `data_dir`, downloaded if it
    is missing; None when the Hub does not answer within `timeout_s` or the download fails,
    with the reason passed to `say` as one line."""
    try:
        return fetch(
            TINYSTORIES_VALID, data_dir, endpoint=endpoint, timeout=timeout_s, progress=progress
        )
    except DownloadError as e:
        say(f"TinyStories not downloaded: {e}")
        return None


def _documents(path: Path, separator: str, chunk_chars: int = 1 << 20) -> Iterator[str]:
    """The documents of a text file, each with the separator that ends it (a last one may
    have none); documents of only white space are skipped."""
    with open(path, encoding="utf-8", errors="surrogateescape", newline="") as f:
        rest = ""
        while chunk := f.read(chunk_chars):
            *whole, rest = (rest + chunk).split(separator)
            yield from (doc + separator for doc in whole if doc.strip())
        if rest.strip():
            yield rest


def split_documents(
    src: str | os.PathLike,
    train_path: str | os.PathLike,
    valid_path: str | os.PathLike,
    *,
    valid_fraction: float = 0.1,
    separator: str = "<|endoftext|>",
) -> tuple[int, int]:
    """Split the `separator`-ended documents of `src` into two files, every document whole and
    in order; returns (training documents, validation documents).

    Document i goes to validation when i * valid_fraction crosses an integer, so floor(n *
    valid_fraction) of n documents do, spread evenly through the file, the same every time.
    Both files are written atomically; ValueError if either would be empty.
    """
    if not 0 < valid_fraction < 1:
        raise ValueError(f"valid_fraction must lie in (0, 1); got {valid_fraction}")
    counts = [0, 0]
    with (
        atomic_write(
            train_path, "w", encoding="utf-8", errors="surrogateescape", newline=""
        ) as train,
        atomic_write(
            valid_path, "w", encoding="utf-8", errors="surrogateescape", newline=""
        ) as valid,
    ):
        for i, doc in enumerate(_documents(Path(src), separator)):
            to_valid = int((i + 1) * valid_fraction) > int(i * valid_fraction)
            (valid if to_valid else train).write(doc)
            counts[to_valid] += 1
        if not all(counts):
            raise ValueError(
                f"{src} has {sum(counts)} documents (ended by {separator!r}): too few to give "
                f"both files one with valid_fraction={valid_fraction}"
            )
    return counts[0], counts[1]
