"""An unlabelled in-domain corpus as training sentences, for TSDAE: one `text` column, no target.

The corpus is a UTF-8 text file, a folder of `.txt` files, or a list of them; `.txt` files in one of two layouts:
- `sentences`: one sentence per line;
- `documents`: documents separated by blank lines, each split into sentences by `sentencex` (rule-based,
  offline), its line breaks read as spaces.
A `.jsonl` file (a BEIR corpus.jsonl, say) holds one document per line in its `text` field, split the same way.
Sentences outside [min_words, max_words] whitespace words are dropped (a runaway line is skipped, not fed to the
model), repeats are dropped with `deduplicate`, and `max_sentences` keeps a seeded random sample of the rest.
"""

import json
import logging
import random
from pathlib import Path
from typing import ClassVar

from embedlab.data.base import EmbeddingDataModule
from embedlab.data.sources import LOCAL_DATA_HINT
from embedlab.errors import ConfigError, DataError

log = logging.getLogger(__name__)
LAYOUTS = ("sentences", "documents")


class CorpusDataModule(EmbeddingDataModule):
    formats: ClassVar[dict[str, tuple[str, ...]]] = {"sentences": ("text",)}

    def __init__(self, path: str | list[str], layout: str = "sentences", language: str = "en", min_words: int = 1,
                 max_words: int | None = 256, deduplicate: bool = True, max_sentences: int | None = None, **kwargs):
        super().__init__(**kwargs)
        if layout not in LAYOUTS:
            raise ConfigError(f"data.layout must be one of {', '.join(LAYOUTS)}, got {layout!r}")
        if min_words < 1 or (max_words is not None and max_words < min_words):
            raise ConfigError(f"data.min_words ({min_words}) must be at least 1 and at most data.max_words "
                              f"({max_words})")
        self.path = path
        self.layout = layout
        self.language = language
        self.min_words = min_words
        self.max_words = max_words
        self.deduplicate = deduplicate
        if max_sentences is not None and max_sentences < 1:
            raise ConfigError(f"data.max_sentences must be at least 1, got {max_sentences}")
        self.max_sentences = max_sentences

    def load_train(self, format: str) -> tuple[list[dict], str]:
        paths = [self.path] if isinstance(self.path, str) else list(self.path)
        sentences = [sentence for path in paths for sentence in read_corpus(path, self.layout, self.language)]
        kept = filter_sentences(sentences, self.min_words, self.max_words, self.deduplicate)
        if sentences and not kept:
            raise DataError(f"data '{self.name}': none of the {len(sentences)} sentences in {self.path} has "
                            f"{self.min_words} to {self.max_words} words")
        origin = ", ".join(paths)
        if self.max_sentences is not None and self.max_sentences < len(kept):
            kept = random.Random(self.seed).sample(kept, self.max_sentences)
            origin = f"{self.max_sentences} sentences sampled from {origin}"
        return [{"text": text} for text in kept], origin

    def stats(self) -> dict[str, float]:
        return {"data/sentences": float(len(self.train_rows or []))}


def read_corpus(path: str | Path, layout: str = "sentences", language: str = "en") -> list[str]:
    """Every sentence of a file, or of the `.txt` files of a folder in name order, whitespace-normalised."""
    root = Path(path)
    if not root.exists():
        raise DataError(f"domain corpus: no file or folder at {root}. {LOCAL_DATA_HINT}")
    files = sorted(root.rglob("*.txt")) if root.is_dir() else [root]
    if not files:
        raise DataError(f"domain corpus: no .txt files in the folder {root}")
    sentences = []
    for file in files:
        text = _read_utf8(file)
        if file.suffix == ".jsonl":
            sentences.extend(split_sentences("\n\n".join(_jsonl_texts(text, file)), language))
        elif layout == "sentences":
            sentences.extend(text.splitlines())
        else:
            sentences.extend(split_sentences(text, language))
    return [" ".join(sentence.split()) for sentence in sentences if sentence.strip()]


def split_sentences(text: str, language: str = "en") -> list[str]:
    """The sentences of documents separated by blank lines, by sentencex's rules for `language`."""
    try:
        from sentencex import segment
    except ImportError:
        raise ConfigError("data.layout=documents splits sentences with the sentencex package: "
                          "pip install sentencex") from None

    documents = [" ".join(block.split()) for block in text.replace("\r\n", "\n").split("\n\n")]
    return [sentence.strip() for document in documents if document
            for sentence in segment(language, document) if sentence.strip()]


def filter_sentences(sentences: list[str], min_words: int, max_words: int | None, deduplicate: bool) -> list[str]:
    """Sentences of min_words to max_words whitespace words, first occurrences only with `deduplicate`."""
    too_short = too_long = 0
    kept = []
    for sentence in sentences:
        words = len(sentence.split())
        if words < min_words:
            too_short += 1
        elif max_words is not None and words > max_words:
            too_long += 1
        else:
            kept.append(sentence)
    if too_long:
        log.warning("domain corpus: skipped %d sentences of more than %d words (data.max_words)", too_long, max_words)
    if too_short:
        log.info("domain corpus: skipped %d sentences of fewer than %d words (data.min_words)", too_short, min_words)
    if deduplicate:
        unique = list(dict.fromkeys(kept))
        log.info("domain corpus: dropped %d repeated sentences", len(kept) - len(unique))
        kept = unique
    return kept


def _jsonl_texts(text: str, file: Path) -> list[str]:
    texts = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            texts.append(str(json.loads(line)["text"]))
        except (json.JSONDecodeError, KeyError, TypeError):
            raise DataError(f"{file}:{number}: not a JSON object with a `text` field") from None
    return texts


def _read_utf8(file: Path) -> str:
    try:
        return file.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise DataError(f"{file}: not UTF-8 text (byte 0x{error.object[error.start]:02x} at offset {error.start}); "
                        "convert it, e.g. with iconv -f latin1 -t utf-8") from None
    except OSError as error:
        raise DataError(f"{file}: cannot be read ({error.strerror or type(error).__name__})") from None
