"""The MTEB adapter: the project's encoder runs in mteb 2.x on a custom task fed from a local file."""

import pytest
import torch

from embedlab.evaluation.loaders import load_scored_pairs
from embedlab.evaluation.sts import STSEvaluator
from embedlab.modeling.encoder import SentenceEncoder

mteb = pytest.importorskip("mteb")
from embedlab.evaluation.mteb_adapter import MtebEncoder, MtebEvaluator, local_sts_task

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def local_sts_file(tmp_path):
    rows = [("a man plays the guitar", "a man plays music", 4.6), ("a dog runs in the park", "the dog walks", 3.2),
            ("a cat sleeps in the house", "a cat is sleeping", 4.1), ("two children play", "people walk", 1.0),
            ("a bird sits in the tree", "a girl sings a song", 0.2), ("the woman eats food", "a woman eats", 3.9)]
    path = tmp_path / "local_sts.tsv"
    path.write_text("s1\ts2\tscore\n" + "".join(f"{a}\t{b}\t{score}\n" for a, b, score in rows))
    return str(path)


def test_mteb_runs_the_encoder_on_a_local_task(tiny_model_dir, local_sts_file, tmp_path):
    pairs = load_scored_pairs({"local": {"path": local_sts_file, "score_range": [0, 5],
                                         "columns": {"sentence1": "s1", "sentence2": "s2", "score": "score"}}})
    encoder = SentenceEncoder.from_pretrained(tiny_model_dir)
    results = MtebEvaluator([local_sts_task("LocalSTS", pairs)], batch_size=4,
                            output_dir=str(tmp_path / "mteb"))(encoder)
    assert list(results) == ["test/mteb-LocalSTS/cosine_spearman"]
    # MTEB's own STS evaluation and ours agree on the same pairs.
    ours = STSEvaluator("local", pairs)(encoder)
    assert results["test/mteb-LocalSTS/cosine_spearman"] == pytest.approx(ours["local/spearman_cosine"], abs=1e-6)
    assert list((tmp_path / "mteb").rglob("LocalSTS.json")), "MTEB keeps its own result file"


def test_encoder_satisfies_mteb_protocol_and_embeds_in_order(tiny_model_dir):
    encoder = SentenceEncoder.from_pretrained(tiny_model_dir)
    adapter = MtebEncoder(encoder, name="embedlab/tiny")
    assert isinstance(adapter, mteb.EncoderProtocol)
    assert adapter.mteb_model_meta.embed_dim == 32
    texts = ["a dog", "a very much longer sentence about a man and his guitar", "a cat"]
    batches = torch.utils.data.DataLoader([{"text": text} for text in texts], batch_size=2)
    embeddings = adapter.encode(batches, task_metadata=None, hf_split="test", hf_subset="default")
    assert embeddings.shape == (3, 32)
    assert torch.allclose(torch.from_numpy(embeddings), encoder.encode(texts), atol=1e-6)


def test_mteb_prompt_types_choose_the_encoders_query_and_document_prompts(tiny_model_dir):
    encoder = SentenceEncoder.from_pretrained(tiny_model_dir)
    encoder.prompts = {"query": "query: ", "passage": "passage: "}
    adapter = MtebEncoder(encoder)
    texts = ["a dog", "a cat sleeps"]
    batches = torch.utils.data.DataLoader([{"text": text} for text in texts], batch_size=2)

    def embed(prompt_type):
        return torch.from_numpy(adapter.encode(batches, task_metadata=None, hf_split="test", hf_subset="default",
                                               prompt_type=prompt_type))

    assert torch.allclose(embed(mteb.types.PromptType.query), encoder.encode(["query: a dog", "query: a cat sleeps"]),
                          atol=1e-6)
    assert torch.allclose(embed(mteb.types.PromptType.document),
                          encoder.encode(["passage: a dog", "passage: a cat sleeps"]), atol=1e-6)
    assert torch.allclose(embed(None), encoder.encode(texts), atol=1e-6)
