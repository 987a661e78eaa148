"""vist2: global context compression for language models (VIST2, arXiv 2601.10378).

Text is cut into chunks of K tokens, each chunk is rendered into a page, a vision encoder and an
aligner turn the page into β visual tokens, and the LLM keeps its context, prompt and output, as
those visual tokens.
"""

from vist2.chunker import Chunk, split_into_chunks
from vist2.config import VIST2Config
from vist2.engine import Engine, GenerationConfig
from vist2.errors import ConfigError, Vist2Error
from vist2.layout import ChunkSegment, PageSegment, TextSegment, build_layout, collate_layouts
from vist2.model import VIST2Model

__version__ = "0.1.0"

__all__ = [
    "Chunk",
    "ChunkSegment",
    "ConfigError",
    "Engine",
    "GenerationConfig",
    "PageSegment",
    "TextSegment",
    "VIST2Config",
    "VIST2Model",
    "Vist2Error",
    "build_layout",
    "collate_layouts",
    "split_into_chunks",
]
