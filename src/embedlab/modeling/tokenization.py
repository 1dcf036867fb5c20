"""Texts to model inputs, for each kind of input module, and the tokenizer settings a checkpoint asks for.

Each tokenisation is a small object that DataLoader workers receive without the model. It tokenises a batch
(`__call__`), or all texts at their own lengths (`without_padding`) to be batched later in length order (`pad`,
`in_length_order`).
"""

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers.utils import cached_file

from embedlab.errors import ConfigError
from embedlab.modeling.batching import in_length_order
from embedlab.modeling.model_files import read_json


class LengthOrdered:
    """Batching in length order, shared by every tokenisation (each has `without_padding` and `pad`)."""

    def in_length_order(self, texts: list[str], batch_size: int, embed: Callable[[dict], torch.Tensor],
                        show_progress_bar: bool = False, streams: int = 1) -> torch.Tensor:
        """`embed` over padded batches of `texts` cut in order of token count, `streams` at once; rows in the order
        of `texts`."""
        # One call to the fast tokenizer for all texts is quicker than one per batch, and its token counts order
        # the batches more tightly than character counts.
        encoded = self.without_padding(texts)

        def embed_rows(indices: list[int]) -> torch.Tensor:
            return embed(self.pad({key: [values[i] for i in indices] for key, values in encoded.items()}))

        return in_length_order(range(len(texts)), lambda i: len(encoded["input_ids"][i]), batch_size, embed_rows,
                               "encode", show_progress_bar, streams)


@dataclass
class Tokenize(LengthOrdered):
    """A Hugging Face tokenizer's batches, cut at `max_seq_length`."""

    tokenizer: object
    max_seq_length: int
    do_lower_case: bool = False

    def __call__(self, texts: list[str]) -> dict[str, torch.Tensor]:
        return dict(self.tokenizer(self._cased(texts), padding=True, truncation=True, max_length=self.max_seq_length,
                                   return_tensors="pt"))

    def without_padding(self, texts: list[str]) -> dict[str, list[list[int]]]:
        """Each text's token ids (and masks) at its own length, to be padded per batch with `pad`."""
        return dict(self.tokenizer(self._cased(texts), truncation=True, max_length=self.max_seq_length))

    def pad(self, encoded: dict[str, list[list[int]]]) -> dict[str, torch.Tensor]:
        return dict(self.tokenizer.pad(encoded, return_tensors="pt"))

    def _cased(self, texts: list[str]) -> list[str]:
        return [text.lower() for text in texts] if self.do_lower_case else texts


@dataclass
class StaticTokenize(LengthOrdered):
    """A `tokenizers.Tokenizer`'s ids without special tokens, flattened with each text's offset (an EmbeddingBag's
    input), as sentence-transformers' StaticEmbedding reads them."""

    tokenizer: object

    def __call__(self, texts: list[str]) -> dict[str, torch.Tensor]:
        return self.pad(self.without_padding(texts))

    def without_padding(self, texts: list[str]) -> dict[str, list[list[int]]]:
        return {"input_ids": [encoding.ids for encoding in self.tokenizer.encode_batch(texts,
                                                                                       add_special_tokens=False)]}

    def pad(self, encoded: dict[str, list[list[int]]]) -> dict[str, torch.Tensor]:
        ids = encoded["input_ids"]
        offsets = torch.tensor([0] + [len(row) for row in ids[:-1]]).cumsum(dim=0)
        return {"input_ids": torch.tensor([token for row in ids for token in row], dtype=torch.long),
                "offsets": offsets}


@dataclass
class RoutedTokenize(LengthOrdered):
    """A Router's tokenisation: the route's own, and the route's name in the features for the Router to follow."""

    routes: dict[str, object]
    route: str

    def __call__(self, texts: list[str]) -> dict:
        return {**self.routes[self.route](texts), "route": self.route}

    def without_padding(self, texts: list[str]) -> dict[str, list[list[int]]]:
        return self.routes[self.route].without_padding(texts)

    def pad(self, encoded: dict[str, list[list[int]]]) -> dict:
        return {**self.routes[self.route].pad(encoded), "route": self.route}


def prepare_tokenizer(tokenizer, location: str) -> None:
    """The tokenizer as the checkpoint means it: a padding token, and an appended EOS where its config asks for one."""
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise ConfigError(f"the tokenizer of '{location}' has neither a padding nor an end-of-sequence token, "
                              "so batches cannot be padded")
        # Decoders often ship without a padding token; the attention mask hides the padding whatever token it is.
        tokenizer.pad_token = tokenizer.eos_token
    saved = _tokenizer_config(location)
    if saved.get("add_eos_token") and not _appends_eos(tokenizer):
        # transformers 5 ignores add_eos_token beside a tokenizer.json, so models such as e5-mistral would lose the
        # EOS that their last-token embedding is read from. Setting it rewrites the post-processor that is saved.
        tokenizer.add_bos_token = _prepends_bos(tokenizer)
        tokenizer.add_eos_token = True


def pad_on_the_left(tokenizer) -> None:
    """Left padding, as last-token models are run, unless the tokenizer's saved config names a side."""
    if "padding_side" not in tokenizer.init_kwargs:
        tokenizer.padding_side = "left"
        # save_pretrained writes the keys of init_kwargs, so this is what carries the side into the saved folder.
        tokenizer.init_kwargs["padding_side"] = "left"


def _tokenizer_config(location: str) -> dict:
    path = cached_file(location, "tokenizer_config.json", _raise_exceptions_for_missing_entries=False)
    return read_json(Path(path)) if path else {}


def _appends_eos(tokenizer) -> bool:
    return tokenizer.eos_token_id is not None and tokenizer("a")["input_ids"][-1:] == [tokenizer.eos_token_id]


def _prepends_bos(tokenizer) -> bool:
    return tokenizer.bos_token_id is not None and tokenizer("a")["input_ids"][:1] == [tokenizer.bos_token_id]
