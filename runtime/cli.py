"""The `avatar` command line. Each subcommand is one function taking parsed arguments.

    avatar say "Hello there" --image me.png -o hello.mp4       in this process, configured backend
    avatar say "Hello there" --server http://127.0.0.1:8001     through a running service
    avatar health --server http://127.0.0.1:8001
    avatar score video.mp4 [--portrait face.png]              quality metrics of an mp4, as JSON

Settings come from the environment as for the service (AVATAR_BACKEND, TTS_ENGINE, MODELS_DIR...).
"""
from __future__ import annotations

import argparse
import base64
import json
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Optional, Sequence

DEFAULT_SERVER = "http://127.0.0.1:8001"


def _say_in_process(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from .config import load_settings
    from .errors import UserInputError
    from .generation import GenerationRequest
    from .gpu_service import build_service

    settings = load_settings()
    print(f"loading the {settings.avatar_backend} backend...", file=sys.stderr)
    service = build_service(settings).generation
    request = GenerationRequest(text=args.text, image=args.image.read_bytes() if args.image else None,
                                voice=args.voice, fps=args.fps)
    with tqdm(desc=f"rendering ({service.avatar.name})", unit="frame", total=None, file=sys.stderr) as bar:
        def progress(frames: int, known_total: Optional[int]) -> None:
            if known_total and known_total != bar.total:
                bar.total = known_total  # grows as TTS speaks more of the text
            bar.update(frames - bar.n)

        workdir = Path(tempfile.mkdtemp(prefix="avatar-cli-"))
        try:
            result = service.generate(request, workdir, on_progress=progress)
            bar.total = result.frames
            bar.refresh()
            shutil.move(str(result.path), args.output)
        except UserInputError as error:
            print(f"error: {error.error}: {error.detail}", file=sys.stderr)
            return 2
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
    print(f"{args.output}: {result.frames} frames, {result.duration:.2f} s, backend {result.backend}")
    return 0


def _say_on_server(args: argparse.Namespace) -> int:
    import httpx
    from tqdm import tqdm

    from .media.fmp4 import FragmentReader

    body = {"text": args.text}
    if args.image:
        body["image"] = base64.b64encode(args.image.read_bytes()).decode()
    if args.voice:
        body["voice"] = args.voice
    if args.fps:
        body["fps"] = args.fps
    reader, frames, seconds = FragmentReader(), 0, 0.0
    with httpx.Client(base_url=args.server, timeout=httpx.Timeout(30.0, read=600.0)) as client:
        with client.stream("POST", "/generate/stream", json=body) as response:
            if response.status_code != 200:
                response.read()
                try:
                    error = response.json()
                    print(f"error {response.status_code}: {error.get('error')}: {error.get('detail')}", file=sys.stderr)
                except ValueError:
                    print(f"error {response.status_code}: {response.text[:500]}", file=sys.stderr)
                return 2
            backend = response.headers.get("x-avatar-backend", "?")
            with open(args.output, "wb") as out, \
                    tqdm(desc=f"receiving ({backend})", unit="frame", file=sys.stderr) as bar:
                for chunk in response.iter_bytes():
                    out.write(chunk)
                    for fragment in reader.feed(chunk):
                        bar.update(fragment.runs["video"].samples)
                        frames += fragment.runs["video"].samples
                        seconds = fragment.end_seconds()
    print(f"{args.output}: {frames} frames, {seconds:.2f} s, backend {backend}")
    return 0


def _health(args: argparse.Namespace) -> int:
    import httpx

    try:
        response = httpx.get(f"{args.server}/health", timeout=10)
    except httpx.HTTPError as error:
        print(f"error: cannot reach {args.server}: {error}", file=sys.stderr)
        return 1
    print(json.dumps(response.json(), indent=2))
    return 0 if response.status_code == 200 else 1


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
    parser = argparse.ArgumentParser(prog="avatar", description="Talking-head videos from text.")
    commands = parser.add_subparsers(dest="command", required=True)

    say = commands.add_parser("say", help="speak a text with a portrait into an mp4")
    say.add_argument("text")
    say.add_argument("--image", type=Path, help="portrait (PNG, JPEG...); default: the bundled avatar")
    say.add_argument("--voice", help="a voice name (see `avatar health`)")
    say.add_argument("--fps", type=int, help="frames per second (default 25)")
    say.add_argument("-o", "--output", type=Path, default=Path("avatar.mp4"))
    say.add_argument("--server", help="use a running service at this URL instead of this process")
    say.set_defaults(run=lambda args: (_say_on_server if args.server else _say_in_process)(args))

    health = commands.add_parser("health", help="what a running service has loaded")
    health.add_argument("--server", default=DEFAULT_SERVER)
    health.set_defaults(run=_health)

    score_parser = commands.add_parser("score", help="quality metrics of an mp4 (lip sync, identity, jitter...)")
    score_parser.add_argument("video", type=Path, help="the mp4 to score")
    score_parser.add_argument("--portrait", type=Path, help="the portrait it was made from (identity, sharpness)")
    score_parser.add_argument("--models-dir", type=Path, help="where syncnet/syncnet_v2.model is (default MODELS_DIR)")
    score_parser.set_defaults(run=score)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "say" and args.image is not None and not args.image.is_file():
        print(f"error: {args.image} is not a file", file=sys.stderr)
        return 2
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
