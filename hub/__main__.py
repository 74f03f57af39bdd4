"""Push a model folder to the Hugging Face Hub, or pull one into the local cache; publish the demo as a Space.

    python -m hub push MODEL_DIR REPO_ID [--private] [--revision BRANCH] [--message TEXT]
    python -m hub pull REPO_ID [--revision R] [--to DIR]
    python -m hub space push SPACE_ID [--model REPO_OR_DIR ...] [--private] [--message TEXT]

The token comes from HF_TOKEN or `hf auth login` (never from the command line, where it would
land in the shell history). Failures print one line and exit with status 1.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from . import HubError, _load, download, push_to_hub
from .space import push_space
from recon.startup import require_folders, start_tensorflow_quietly


def parse_args(argv=None) -> argparse.Namespace:
    # the same parser answers `recon-hub` (installed) and `python -m hub` (a clone): name the one typed
    prog = "recon-hub" if Path(sys.argv[0]).name == "recon-hub" else "python -m hub"
    p = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n")[0])
    commands = p.add_subparsers(dest="command", required=True)
    push = commands.add_parser("push", help="upload a model folder as one commit (card and samples added)")
    push.add_argument("model_dir", help="model folder, e.g. a training run")
    push.add_argument("repo_id", help="user/name on the Hub")
    push.add_argument("--private", action="store_true", help="create the repo private")
    push.add_argument("--revision", help="branch to commit to (created if missing); default main")
    push.add_argument("--message", help="commit message")
    pull = commands.add_parser("pull", help="download a model into the cache (or --to DIR) and check it loads")
    pull.add_argument("repo_id", help="user/name on the Hub")
    pull.add_argument("--revision", help="branch, tag or commit; default main")
    pull.add_argument("--to", metavar="DIR", help="copy the files into DIR instead of the Hugging Face cache")
    space = commands.add_parser("space", help="publish the Gradio demo as a Hugging Face Space")
    space_push = space.add_subparsers(dest="space_command", required=True).add_parser(
        "push", help="upload app.py, recon/, hub/, examples/ and the models as one commit to a Gradio Space")
    space_push.add_argument("space_id", help="user/name of the Space (created if missing)")
    space_push.add_argument("--model", action="append", default=[], metavar="REPO_OR_DIR",
                            help="repeatable; the first is what the Space opens on (a Hub repo, pulled at start, "
                                 "must come first), local model folders are bundled under models/; "
                                 "models/vgg16-block3_conv3 always is (default, and fallback)")
    space_push.add_argument("--private", action="store_true", help="create the Space private")
    space_push.add_argument("--message", help="commit message")
    args = p.parse_args(argv)
    if args.command == "push":
        require_folders(p, {"model_dir": args.model_dir})
    return args


def main(argv=None) -> None:
    args = parse_args(argv)
    try:
        if args.command == "push":
            start_tensorflow_quietly()  # the folder is rebuilt before it is published
            print(push_to_hub(args.model_dir, args.repo_id, private=args.private, revision=args.revision,
                              commit_message=args.message))
        elif args.command == "space":
            start_tensorflow_quietly()
            print(push_space(args.space_id, args.model, private=args.private, commit_message=args.message))
        else:
            folder = download(args.repo_id, revision=args.revision, local_dir=args.to)
            start_tensorflow_quietly()  # after the download, so that no network fails within a second
            model = _load(folder, f"Hub repo {args.repo_id}")
            print(f"{args.repo_id}: {model.describe()}\n{folder}")
    except HubError as e:
        sys.exit(f"error: {' '.join(str(e).split())}")


if __name__ == "__main__":
    main()
