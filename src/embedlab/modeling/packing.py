"""Sequence packing for training (`backbone.sequence_packing=true`, the training default).

Each text column of a batch is padded to its own longest text, and in a training batch of short sentences that
padding is a third or more of the tokens the backbone computes. Packed, the texts of all of a batch's columns lie
end to end in rows as wide as the longest text, each text at its own positions (counted from 0) and attending only
to its own tokens through a block-diagonal mask; the backbone runs once, and each column's token embeddings are
gathered back into its padded layout, so pooling and everything after it see what they always see. Embeddings
equal the per-column forward's to float rounding.

Only backbones known to take packed rows as given are packed (PACKABLE_MODEL_TYPES): absolute position ids read
from the input, bidirectional attention, and scaled dot-product attention, which takes a boolean 4D mask.
RoBERTa-style models offset their positions and decoders attend causally, so they keep the per-column forward.
"""

from dataclasses import dataclass

import torch
from torch import Tensor, nn

PACKABLE_MODEL_TYPES = ("bert",)


def supports_packing(model: nn.Module) -> bool:
    config = model.config
    return config.model_type in PACKABLE_MODEL_TYPES and config._attn_implementation == "sdpa"


@dataclass
class PackedTexts:
    """Rows of packed texts: `inputs` for the backbone, and for each column the packed position of each of its
    tokens (padding points at position 0; pooling masks it out)."""

    inputs: dict[str, Tensor]
    token_positions: list[Tensor]

    def unpack(self, token_embeddings: Tensor) -> list[Tensor]:
        """Each column's token embeddings in its padded (rows, length, hidden) layout."""
        flat = token_embeddings.reshape(-1, token_embeddings.shape[-1])
        return [flat[positions] for positions in self.token_positions]


def first_fit_starts(lengths: list[int], width: int) -> tuple[list[int], int]:
    """Where each text starts in the flattened rows (row * width + offset), longest texts placed first, each into
    the first row with room; and the number of rows."""
    starts = [0] * len(lengths)
    room: list[int] = []
    for text in sorted(range(len(lengths)), key=lambda index: -lengths[index]):
        row = next((row for row, free in enumerate(room) if free >= lengths[text]), len(room))
        if row == len(room):
            room.append(width)
        starts[text] = row * width + width - room[row]
        room[row] -= lengths[text]
    return starts, len(room)


def pack_columns(columns: list[dict[str, Tensor]], token_inputs: tuple[str, ...]) -> PackedTexts:
    """The texts of all `columns` (tokenised features, each with an attention mask) packed into rows; `token_inputs`
    are the per-token inputs the backbone reads (input ids, token type ids)."""
    masks = [features["attention_mask"].bool() for features in columns]
    lengths = torch.cat([mask.sum(1) for mask in masks])
    width = int(lengths.max())
    starts, rows = first_fit_starts(lengths.tolist(), width)
    starts = torch.tensor(starts, device=lengths.device)
    device = masks[0].device
    flat = {key: torch.zeros(rows * width, dtype=columns[0][key].dtype, device=device) for key in token_inputs}
    flat["position_ids"] = torch.zeros(rows * width, dtype=torch.long, device=device)
    # Empty places form a segment of their own, so that no query row of the mask is all False.
    segments = torch.full((rows * width,), -1, dtype=torch.long, device=device)
    token_positions = []
    first_text = 0
    for features, mask in zip(columns, masks):
        texts = mask.shape[0]
        offsets = mask.long().cumsum(1) - 1
        positions = torch.where(mask, starts[first_text:first_text + texts, None] + offsets, 0)
        targets = positions[mask]
        for key in token_inputs:
            flat[key][targets] = features[key][mask]
        flat["position_ids"][targets] = offsets[mask]
        segments[targets] = torch.arange(first_text, first_text + texts, device=device)[:, None].expand_as(mask)[mask]
        token_positions.append(positions)
        first_text += texts
    segments = segments.view(rows, width)
    inputs = {key: values.view(rows, width) for key, values in flat.items()}
    inputs["attention_mask"] = (segments[:, None, :, None] == segments[:, None, None, :])
    return PackedTexts(inputs, token_positions)
