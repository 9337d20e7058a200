"""Export to other tools: a trained model and its tokenizer as a Hugging Face Llama folder."""

from cs336_basics.export.hf import export_checkpoint, export_hf
from cs336_basics.export.llama import NotExportableError, check_llama_compatible

__all__ = ["NotExportableError", "check_llama_compatible", "export_checkpoint", "export_hf"]
