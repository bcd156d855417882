"""A user compares backends: scripts/compare_backends.py on two portraits and two texts writes a
report with a table per metric and a labelled contact sheet per input."""
from __future__ import annotations

import json
import re
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from .server import REPO

pytestmark = pytest.mark.service


@pytest.mark.slow
def test_compare_backends_writes_report_tables_and_contact_sheets(astronaut, tmp_path):
    portraits = tmp_path / "portraits"
    portraits.mkdir()
    Image.fromarray(astronaut).save(portraits / "astronaut.png")
    close_up = np.ascontiguousarray(astronaut[20:340, 60:380][:, ::-1])  # another framing, mirrored
    Image.fromarray(close_up).resize((256, 256)).save(portraits / "close_up.png")
    texts = tmp_path / "texts.txt"
    texts.write_text("Hello there.\n\nGood morning.\n")
    out = tmp_path / "out"
    # Bounded: the CPU default backend, 10 fps, two short texts; the refiner and SyncNet on random weights.
    result = subprocess.run(
        [sys.executable, "scripts/compare_backends.py", "--portraits", str(portraits), "--texts", str(texts),
         "--out", str(out), "--backends", "meshwarp", "--fps", "10", "--random-weights"],
        capture_output=True, text=True, timeout=900, cwd=REPO)
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary == {"report": str(out / "report.md"), "clips": 8, "inputs": 4}

    report = (out / "report.md").read_text()
    assert "Random weights" in report and "meaningless" in report
    inputs = ["astronaut-text1", "astronaut-text2", "close_up-text1", "close_up-text2"]
    tables = re.findall(r"^## (.+)\n\n(\|.+\|\n(?:\|.+\|\n)+)", report, flags=re.MULTILINE)
    titles = [title for title, _ in tables]
    for metric in ("Render speed", "Lip sync score", "SyncNet LSE-C", "SyncNet LSE-D", "Identity",
                   "Landmark jitter", "Mouth sharpness"):
        assert any(title.startswith(metric) for title in titles), metric
    for _, table in tables:
        header, _, *rows = table.strip().splitlines()
        assert header == "| variant | " + " | ".join(inputs) + " | mean |"
        assert [row.split("|")[1].strip() for row in rows] == ["meshwarp", "meshwarp+wav2lip"]
    speed = dict(tables)[next(t for t in titles if t.startswith("Render speed"))]
    assert all(float(cell) > 0 for row in speed.strip().splitlines()[2:] for cell in row.split("|")[2:-1])

    scores = json.loads((out / "report.json").read_text())
    assert len(scores["rows"]) == 8 and scores["header"]["random_weights"] is True
    for row in scores["rows"]:
        assert (out / row["clip"]).stat().st_size > 1000
        assert row["report"]["syncnet"]["available"] is True

    for name in inputs:
        sheet = Image.open(out / "sheets" / f"{name}.png")
        assert f"![{name}](sheets/{name}.png)" in report
        # two labelled rows (backend, backend+refiner) of 192 px frames under a 28 px header
        assert sheet.height == 28 + 2 * 192 and sheet.width > 170 + 5 * 192


def test_a_backend_that_cannot_load_is_listed_with_its_reason(tmp_path):
    sys.path.insert(0, str(REPO / "scripts"))
    try:
        import compare_backends
    finally:
        sys.path.remove(str(REPO / "scripts"))
    from runtime.config import load_settings
    from runtime.device import DeviceChoice

    loaded, failed = compare_backends.load_backends(
        ["liveportrait"], load_settings(models_dir=tmp_path), DeviceChoice("cpu", "test", True))
    assert loaded == {} and "liveportrait" in failed and "appearance_feature_extractor" in failed["liveportrait"]
