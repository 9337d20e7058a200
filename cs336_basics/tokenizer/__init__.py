"""Byte-level BPE: pre-tokenization, training, encoding/decoding and GPT-2-format files."""
