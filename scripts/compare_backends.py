#!/usr/bin/env python3
"""Render every input on every avatar backend that loads, with and without the lip refiner, score
each clip with runtime.quality, and write a comparison:

    OUT/report.md        one table per metric (rows: backend[+wav2lip], columns: inputs), with speed
    OUT/report.json      every score
    OUT/sheets/*.png     per input: the same frames of every variant side by side, labelled
    OUT/clips/*.mp4      the rendered clips

    python scripts/compare_backends.py --portraits DIR --texts FILE --out DIR
        [--backends liveportrait sadtalker meshwarp] [--fps 25] [--random-weights]

Weights come from MODELS_DIR as the service reads them. --random-weights writes random-weight
checkpoints in the official layouts (needs this repository's tests/ and torch) so that the whole
comparison runs on a machine without downloads; the report then says its scores are meaningless.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from runtime.config import load_settings  # noqa: E402
from runtime.device import select_device  # noqa: E402
from runtime.errors import UserInputError  # noqa: E402
from runtime.media.audio import frame_count, pad_to_frames  # noqa: E402
from runtime.media.encode import encode_mp4  # noqa: E402
from runtime.media.portrait import load_portrait_file  # noqa: E402
from runtime.models.factory import BACKENDS, FALLBACK_CHAIN, backend_class  # noqa: E402
from runtime.quality import QualityScorer  # noqa: E402
from runtime.tts.factory import load_tts_engine  # noqa: E402

log = logging.getLogger("compare_backends")
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp"}
SHEET_FRAMES = 6
SHEET_CELL = 192  # px, the height of one frame in a contact sheet
# (title, path into a report, how to print it)
METRICS = [
    ("Render speed (frames/s, animation + refiner)", ("speed", "frames_per_second"), "{:.2f}"),
    ("Lip sync score (rank correlation of lip opening and loudness at lag 0; higher is better)",
     ("lip_sync", "score"), "{:.3f}"),
    ("Lip sync best lag (frames; 0 is in sync)", ("lip_sync", "best_lag_frames"), "{:d}"),
    ("SyncNet LSE-C (confidence; higher is better)", ("syncnet", "lse_c"), "{:.3f}"),
    ("SyncNet LSE-D (distance; lower is better)", ("syncnet", "lse_d"), "{:.3f}"),
    ("Identity: upper-face similarity to the portrait (1 = identical)", ("identity", "similarity_mean"), "{:.4f}"),
    ("Landmark jitter (per mille of face height; lower is steadier)", ("jitter", "mean_per_mille"), "{:.3f}"),
    ("Mouth sharpness relative to the portrait's (1 = as sharp)", ("sharpness", "ratio_to_portrait"), "{:.3f}"),
    ("Audio minus video duration (s)", ("av_sync", "duration_difference_s"), "{:.3f}"),
]


def write_random_weights(models_dir: Path, backends: list[str]) -> None:
    """Random-weight checkpoints in the official layouts (the test suite's generators)."""
    from testkit.quality_references import write_syncnet_checkpoint, write_wav2lip_checkpoint

    if "liveportrait" in backends:
        from testkit.liveportrait_checkpoints import write_random_checkpoints as liveportrait

        liveportrait(models_dir)
    if "sadtalker" in backends:
        from testkit.sadtalker_checkpoints import write_random_checkpoints as sadtalker

        sadtalker(models_dir)
    write_wav2lip_checkpoint(models_dir / "wav2lip" / "wav2lip_gan.pth")
    write_syncnet_checkpoint(models_dir / "syncnet" / "syncnet_v2.model")


def load_backends(names: list[str], settings, device) -> tuple[dict, dict]:
    """Backends that load, and why the others did not (no fallback: each is compared as itself)."""
    loaded, failed = {}, {}
    for name in names:
        try:
            loaded[name] = backend_class(name).load(settings, device)
        except Exception as exc:
            failed[name] = f"{type(exc).__name__}: {exc}"
            log.warning("%s did not load: %s", name, exc)
    return loaded, failed


def load_refiner(settings, device):
    try:
        from runtime.engines.wav2lip.refiner import LipRefiner

        return LipRefiner.load(settings.models_dir, device.name), ""
    except Exception as exc:
        return None, f"{type(exc).__name__}: {exc}"


def render_variants(portrait, speech, fps, backends, refiner) -> list[dict]:
    """Each backend's frames, and the refined frames when the refiner loaded, with the seconds spent."""
    variants = []
    for name, backend in backends.items():
        started = time.perf_counter()
        frames = list(backend.animate(portrait, speech, fps, frame_count(speech.duration, fps)))
        animation = time.perf_counter() - started
        variants.append({"variant": name, "frames": frames, "seconds": animation})
        if refiner is not None:
            started = time.perf_counter()
            refined = list(refiner.refine(iter(frames), speech, fps))
            variants.append({"variant": f"{name}+wav2lip", "frames": refined,
                             "seconds": animation + time.perf_counter() - started})
    return variants


def contact_sheet(variants: list[dict], title: str, path: Path) -> None:
    """Rows: variants; columns: the same SHEET_FRAMES frames, evenly spaced; each row labelled."""
    from PIL import Image, ImageDraw

    count = min(len(v["frames"]) for v in variants)
    picks = np.linspace(0, count - 1, min(SHEET_FRAMES, count)).round().astype(int)
    first = variants[0]["frames"][0]
    cell_w = int(round(SHEET_CELL * first.shape[1] / first.shape[0]))
    label_w, header = 170, 28
    sheet = Image.new("RGB", (label_w + cell_w * len(picks), header + SHEET_CELL * len(variants)), "white")
    draw = ImageDraw.Draw(sheet)
    draw.text((6, 8), title, fill="black")
    for column, index in enumerate(picks):
        draw.text((label_w + column * cell_w + 4, 8), f"frame {index}", fill="black")
    for row, variant in enumerate(variants):
        top = header + row * SHEET_CELL
        draw.text((6, top + SHEET_CELL // 2 - 6), variant["variant"], fill="black")
        for column, index in enumerate(picks):
            frame = Image.fromarray(variant["frames"][index]).resize((cell_w, SHEET_CELL))
            sheet.paste(frame, (label_w + column * cell_w, top))
    path.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(path)


def _value(report: dict, keys: tuple[str, str]):
    value = report.get(keys[0], {}).get(keys[1])
    return value if isinstance(value, (int, float)) and np.isfinite(value) else None


def write_report(out: Path, rows: list[dict], inputs: list[str], header: dict) -> None:
    variants = list(dict.fromkeys(row["variant"] for row in rows))
    lines = ["# Backend comparison", ""]
    if header["random_weights"]:
        lines += ["> **Random weights.** Every network ran on random-weight checkpoints in the official layouts:",
                  "> these scores are meaningless as a judgement of the backends; they only show the pipeline runs.", ""]
    lines += [f"- Device: {header['device']}; fps {header['fps']}; models: `{header['models_dir']}`",
              f"- Backends compared: {', '.join(header['backends']) or 'none'}"]
    for name, reason in header["failed"].items():
        lines.append(f"- `{name}` did not load: {reason}")
    lines.append(f"- Lip refiner (wav2lip): {'on' if not header['refiner_off'] else 'off: ' + header['refiner_off']}")
    lines.append(f"- SyncNet: {'on' if not header['syncnet_off'] else 'off: ' + header['syncnet_off']}")
    lines += ["", "Inputs: " + "; ".join(f"`{name}`" for name in inputs), ""]
    notes = [f"- `{r['input']}` {r['variant']}: {r['report']['note']}" for r in rows if "note" in r["report"]]
    if notes:
        lines += ["Clips that could not be scored:", ""] + notes + [""]
    for title, keys, fmt in METRICS:
        lines += [f"## {title}", "", "| variant | " + " | ".join(inputs) + " | mean |",
                  "|---" * (len(inputs) + 2) + "|"]
        for variant in variants:
            values = [next((_value(r["report"], keys) for r in rows
                            if r["variant"] == variant and r["input"] == name), None) for name in inputs]
            present = [v for v in values if v is not None]
            cells = ["n/a" if v is None else fmt.format(v) for v in values]
            mean = "n/a" if not present else (fmt.replace(":d", ":.1f")).format(float(np.mean(present)))
            lines.append(f"| {variant} | " + " | ".join(cells) + f" | {mean} |")
        lines.append("")
    lines += ["## Contact sheets", ""] + [f"![{name}](sheets/{name}.png)" for name in inputs] + [""]
    (out / "report.md").write_text("\n".join(lines))
    (out / "report.json").write_text(json.dumps({"header": header, "rows": rows}, indent=1))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--portraits", type=Path, required=True, help="folder of portrait images")
    parser.add_argument("--texts", type=Path, required=True, help="text file, one text to speak per line")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--backends", nargs="+", default=FALLBACK_CHAIN, choices=list(BACKENDS))
    parser.add_argument("--fps", type=int, default=25)
    parser.add_argument("--random-weights", action="store_true",
                        help="run on random-weight checkpoints written to a temporary MODELS_DIR")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    portraits = sorted(p for p in args.portraits.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    texts = [line.strip() for line in args.texts.read_text().splitlines() if line.strip()]
    if not portraits or not texts:
        parser.error("need at least one portrait image and one line of text")
    overrides = {}
    if args.random_weights:
        models_dir = Path(tempfile.mkdtemp(prefix="compare-random-weights-"))
        write_random_weights(models_dir, args.backends)
        overrides["models_dir"] = models_dir
    settings = load_settings(**overrides)
    device = select_device(settings)
    tts, _ = load_tts_engine(settings, device)
    backends, failed = load_backends(args.backends, settings, device)
    refiner, refiner_off = load_refiner(settings, device)
    scorer = QualityScorer.load(settings.models_dir, device.name, max_seconds=settings.max_evaluate_seconds)

    args.out.mkdir(parents=True, exist_ok=True)
    rows, inputs = [], []
    for portrait_path in portraits:
        portrait = load_portrait_file(portrait_path, settings.max_output_side)
        for text_number, text in enumerate(texts, 1):
            name = f"{portrait_path.stem}-text{text_number}"
            inputs.append(name)
            speech = pad_to_frames(tts.synthesize(text), args.fps)
            variants = render_variants(portrait, speech, args.fps, backends, refiner)
            for variant in variants:
                clip = args.out / "clips" / f"{name}-{variant['variant']}.mp4"
                clip.parent.mkdir(parents=True, exist_ok=True)
                encode_mp4(iter(variant["frames"]), speech, args.fps, clip, expected_frames=len(variant["frames"]))
                try:
                    report = scorer.score(clip, portrait)
                except UserInputError as exc:  # random weights draw no face: say so in the row
                    report = {"note": f"{exc.error}: {exc.detail}"}
                report["speed"] = {"seconds": round(variant["seconds"], 3),
                                   "frames_per_second": round(len(variant["frames"]) / variant["seconds"], 2)}
                rows.append({"input": name, "portrait": portrait_path.name, "text": text,
                             "variant": variant["variant"], "clip": str(clip.relative_to(args.out)), "report": report})
                log.info("%s %s: lip sync %s, %.1f frames/s", name, variant["variant"],
                         report.get("lip_sync", {}).get("score"), report["speed"]["frames_per_second"])
            if variants:
                contact_sheet(variants, f"{portrait_path.name}: {text[:60]}", args.out / "sheets" / f"{name}.png")
    header = {"device": device.name, "fps": args.fps, "models_dir": str(settings.models_dir),
              "random_weights": args.random_weights, "backends": list(backends), "failed": failed,
              "refiner_off": refiner_off, "syncnet_off": scorer.syncnet_unavailable}
    write_report(args.out, rows, inputs, header)
    print(json.dumps({"report": str(args.out / "report.md"), "clips": len(rows), "inputs": len(inputs)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
