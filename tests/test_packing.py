import pytest
import torch

from embedlab.modeling.encoder import SentenceEncoder
from embedlab.modeling.packing import first_fit_starts


def test_first_fit_places_each_text_whole_in_a_row_without_overlap():
    lengths = [5, 3, 2, 4, 1, 5, 2]
    starts, rows = first_fit_starts(lengths, width=5)
    assert rows == 5  # 5 | 5 | 4+1 | 3+2 | 2
    taken = set()
    for start, length in zip(starts, lengths):
        places = set(range(start, start + length))
        assert start // 5 == (start + length - 1) // 5, "a text crosses a row's end"
        assert taken.isdisjoint(places)
        taken |= places


def per_column_and_packed(encoder, columns, weights):
    """Each column's embeddings and the parameters' gradients, through `forward` per column and packed."""
    results = []
    for embed in (lambda columns: [encoder(features) for features in columns], encoder.forward_columns):
        encoder.zero_grad(set_to_none=True)
        embeddings = embed(columns)
        sum((embedding * weight).sum() for embedding, weight in zip(embeddings, weights)).backward()
        results.append((embeddings, {name: p.grad for name, p in encoder.named_parameters() if p.grad is not None}))
    return results


@pytest.mark.parametrize("pooling", ["mean", "cls", "max"])
def test_packed_columns_give_the_per_column_embeddings_and_gradients(tiny_model_dir, sentences, pooling):
    encoder = SentenceEncoder.from_pretrained(tiny_model_dir, pooling=pooling, sequence_packing=True).eval()
    assert encoder.input_module.packs_sequences
    # Columns of different lengths, each padded to its own longest text.
    columns = [encoder.tokenize(sentences[:4]), encoder.tokenize([s[:12] for s in sentences[4:8]]),
               encoder.tokenize(sentences[8:12])]
    padded_positions = sum(features["input_ids"].numel() for features in columns)
    computed = []
    encoder.backbone.register_forward_hook(lambda module, args, kwargs, output: computed.append(
        kwargs["input_ids"].numel()), with_kwargs=True)
    weights = [torch.randn(4, encoder.embedding_dim, generator=torch.Generator().manual_seed(i)) for i in range(3)]

    (one_by_one, gradients), (packed, packed_gradients) = per_column_and_packed(encoder, columns, weights)

    assert len(computed) == 4 and computed[-1] < padded_positions  # one pass over fewer places than the padding
    for ours, theirs in zip(packed, one_by_one):
        torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-6)
    assert packed_gradients.keys() == gradients.keys()
    for name, gradient in gradients.items():
        torch.testing.assert_close(packed_gradients[name], gradient, rtol=1e-4, atol=1e-6, msg=name)


def test_a_backbone_that_cannot_pack_keeps_the_per_column_forward(tiny_qwen2_dir, sentences):
    encoder = SentenceEncoder.from_pretrained(tiny_qwen2_dir, pooling="lasttoken", sequence_packing=True).eval()
    assert not encoder.input_module.packs_sequences  # causal attention: packed rows would need a causal mask
    columns = [encoder.tokenize(sentences[:3]), encoder.tokenize(sentences[3:6])]
    for ours, theirs in zip(encoder.forward_columns(columns), [encoder(features) for features in columns]):
        torch.testing.assert_close(ours, theirs, rtol=0, atol=0)
