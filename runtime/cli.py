"""The `avatar` command line. Each subcommand is one function taking parsed arguments.

    avatar score video.mp4 [--portrait face.png]     quality metrics of an mp4, as JSON
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Optional, Sequence


def score(args: argparse.Namespace) -> int:
    """Print the quality report of an mp4 (the same JSON as POST /evaluate)."""
    from .config import load_settings
    from .errors import UserInputError
    from .process import configure_process
    from .quality.service import EvaluationService

    overrides = {"models_dir": args.models_dir} if args.models_dir else {}
    settings = load_settings(**overrides)
    configure_process(settings)  # MediaPipe's native log lines would otherwise mix into stderr
    for path in (args.video, args.portrait):
        if path is not None and not path.is_file():
            print(json.dumps({"error": "not_found", "detail": f"{path} is not a file"}), file=sys.stderr)
            return 2
    try:
        portrait = args.portrait.read_bytes() if args.portrait is not None else None
        report = EvaluationService.load(settings).evaluate(args.video, portrait)
    except UserInputError as error:
        print(json.dumps({"error": error.error, "detail": error.detail}), file=sys.stderr)
        return 2
    print(json.dumps(report, indent=2))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="avatar", description="Talking-head avatar service tools.")
    commands = parser.add_subparsers(dest="command", required=True)

    score_parser = commands.add_parser("score", help="quality metrics of an mp4 (lip sync, identity, jitter...)")
    score_parser.add_argument("video", type=Path, help="the mp4 to score")
    score_parser.add_argument("--portrait", type=Path, help="the portrait it was made from (identity, sharpness)")
    score_parser.add_argument("--models-dir", type=Path, help="where syncnet/syncnet_v2.model is (default MODELS_DIR)")
    score_parser.set_defaults(run=score)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
