"""Upload a saved model folder to the hub: `python scripts/push_to_hub.py <model dir> <user/name>`.

What `push_to_hub=<repo id>` does after training, for a folder saved earlier (its model card included). The token
comes from `HF_TOKEN` or `hf auth login`; `HF_ENDPOINT` points at another hub.
"""

import argparse
from pathlib import Path

from embedlab.cli import report_errors
from embedlab.modeling.hub import push_model


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model_dir", type=Path, help="a saved model folder (a run's model/)")
    parser.add_argument("repo_id", help="the hub repository, user/name; created if missing")
    args = parser.parse_args()
    print(push_model(args.model_dir, args.repo_id))
    return 0


if __name__ == "__main__":
    raise SystemExit(report_errors(main))
