"""Publishing a saved model folder to the Hugging Face hub (or any server speaking its API, `HF_ENDPOINT`).

Only the model folder goes up, never a run's checkpoints, and nothing that holds a secret: a file containing the
value of a secret-named environment variable (HF_TOKEN, WANDB_API_KEY, ...) stops the upload before it starts.
"""

from pathlib import Path

from embedlab.errors import ConfigError, first_line
from embedlab.modeling.model_files import holds_model
from embedlab.redaction import secret_values

# Weights are binary: a secret in them would be no accident, and scanning gigabytes for one is slow.
UNSCANNED_SUFFIXES = (".safetensors", ".bin", ".pt")
NEVER_UPLOADED = ["*.ckpt", ".*"]


def push_model(model_dir: Path, repo_id: str) -> str:
    """Upload `model_dir` to the hub repository `repo_id` (created if missing); returns the commit's URL."""
    from huggingface_hub import HfApi, constants
    from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled

    # The HTTP client's base error (refused connections, timeouts, HTTP statuses), whichever client this release
    # of huggingface_hub is built on: its own HTTP error derives from it.
    transport_error = next(base for base in HfHubHTTPError.__mro__ if base.__name__ == "HTTPError")

    if not holds_model(model_dir):
        raise ConfigError(f"push_to_hub: {model_dir} is not a saved model folder")
    check_no_secrets(model_dir)
    api = HfApi()
    try:
        api.create_repo(repo_id, exist_ok=True)
        commit = api.upload_folder(repo_id=repo_id, folder_path=model_dir, ignore_patterns=NEVER_UPLOADED,
                                   commit_message="Upload model trained with embedlab")
    except (transport_error, OfflineModeIsEnabled) as error:
        raise ConfigError(f"push_to_hub: could not upload to '{repo_id}' at {constants.ENDPOINT}: "
                          f"{first_line(error)}. The model is saved in {model_dir}; push it later with "
                          f"python scripts/push_to_hub.py {model_dir} {repo_id}") from error
    return commit.commit_url


def check_no_secrets(model_dir: Path) -> None:
    secrets = [secret.encode() for secret in secret_values()]
    for path in sorted(model_dir.rglob("*")):
        if path.is_file() and not path.name.endswith(UNSCANNED_SUFFIXES):
            content = path.read_bytes()
            if any(secret in content for secret in secrets):
                raise ConfigError(f"push_to_hub: {path} holds the value of a secret environment variable; "
                                  "nothing was uploaded")
