"""Model checkpoints from disk: Hugging Face safetensors directories and GGUF files, as HF-named numpy
tensors, an HF-shaped config dict and a tokenizer. See checkpoint.py for the entry point."""

from kiln.loaders.checkpoint import Checkpoint, load_checkpoint
from kiln.loaders.tokenizer import StreamDecoder, Tokenizer

__all__ = ["Checkpoint", "load_checkpoint", "Tokenizer", "StreamDecoder"]
