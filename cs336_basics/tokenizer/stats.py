"""How well a tokenizer compresses text and how fast it encodes: the handout's tokenizer experiments.

Compression is measured in UTF-8 bytes per token over whole sampled documents, so a ratio is
comparable across tokenizers and corpora. Throughput is bytes of text encoded per second of
wall-clock time on this machine.
"""

import itertools
import os
import random
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

EOT = "<|endoftext|>"


class Encoder(Protocol):
    """The one method these statistics need from a tokenizer (`cs336_basics.Tokenizer` has it)."""

    def encode(self, text: str) -> list[int]: ...


def split_documents(text: str) -> list[str]:
    """Documents separated by `<|endoftext|>` if the text has any, else by blank lines."""
    pieces = text.split(EOT) if EOT in text else re.split(r"\n\s*\n", text)
    return [p.strip() for p in pieces if p.strip()]


def sample_documents(path: str | os.PathLike, n: int, seed: int = 0) -> list[str]:
    """`n` documents drawn without replacement from the file (all of them if it has fewer)."""
    try:
        docs = split_documents(Path(path).read_text(encoding="utf-8", errors="replace"))
    except FileNotFoundError:
        raise FileNotFoundError(f"text file not found: {path}") from None
    if not docs:
        raise ValueError(f"{path} holds no documents (it is empty or whitespace only)")
    return random.Random(seed).sample(docs, min(n, len(docs)))


def compression_ratio(tokenizer: Encoder, docs: list[str]) -> float:
    """Total UTF-8 bytes over total tokens when each document is encoded on its own."""
    n_bytes = sum(len(d.encode("utf-8")) for d in docs)
    n_tokens = sum(len(tokenizer.encode(d)) for d in docs)
    return n_bytes / max(n_tokens, 1)


@dataclass
class Throughput:
    bytes_encoded: int
    seconds: float

    @property
    def bytes_per_s(self) -> float:
        return self.bytes_encoded / self.seconds

    def hours_for(self, corpus_bytes: float) -> float:
        """Single-process hours to encode a corpus of `corpus_bytes` at this speed."""
        return corpus_bytes / self.bytes_per_s / 3600


def measure_throughput(tokenizer: Encoder, docs: list[str], target_bytes: int) -> Throughput:
    """Time one `encode` of about `target_bytes` of the documents joined by `<|endoftext|>`.

    The documents are cycled to reach the size, so a tokenizer's cache is as warm as it would
    be part-way through a real corpus.
    """
    parts, size = [], -len(EOT)  # no separator before the first document
    for doc in itertools.cycle(docs):
        if size >= target_bytes:
            break
        parts.append(doc)
        size += len(EOT) + len(doc.encode("utf-8"))
    text = EOT.join(parts)
    start = time.perf_counter()
    tokenizer.encode(text)
    return Throughput(len(text.encode("utf-8")), time.perf_counter() - start)
