#!/usr/bin/env bash
# Download a Coqui TTS model by name for TTS_ENGINE=coqui; the service itself never downloads.
#
#   scripts/setup_coqui.sh [MODEL]    MODEL defaults to $COQUI_MODEL, else XTTS v2:
#                                     tts_models/multilingual/multi-dataset/xtts_v2
#   TTS_ENGINE=coqui COQUI_MODEL=MODEL ./scripts/serve.sh     then serves with it
#
# Installs the coqui extra into $VENV first (torch 2.9.1 + torchaudio + coqui-tts: several GB).
# Models go where coqui-tts keeps them: $TTS_HOME/tts (default ~/.local/share/tts); XTTS v2 comes
# from the Hugging Face cache ($HF_HOME, default ~/.cache/huggingface). XTTS is licensed under the
# Coqui Public Model License: you are asked to agree, or agree ahead with COQUI_TOS_AGREED=1. The
# agreement is recorded beside the model (tos_agreed.txt) so that the service loads it without asking.
set -euo pipefail
cd "$(dirname "$0")/.."

MODEL=${1:-${COQUI_MODEL:-tts_models/multilingual/multi-dataset/xtts_v2}}
export VENV=${VENV:-.venv}
TTS_ENGINE=coqui ./scripts/install.sh

"$VENV/bin/python" - "$MODEL" <<'PY'
import sys

from TTS.utils.manage import ModelManager

from runtime.tts.coqui_engine import named_model_status

name = sys.argv[1]
manager = ModelManager(progress_bar=True)
# Asks for the license terms on stdin (unless COQUI_TOS_AGREED=1), then downloads what is missing.
try:
    model_path, config_path, item = manager.download_model(name)
except (KeyError, ValueError) as exc:  # not in coqui's catalogue, or not type/language/dataset/model
    sys.exit(f"{name} is not a Coqui model name ({type(exc).__name__}: {exc}); list them with: tts --list_models")
if item.get("tos_required"):
    folder = manager.output_prefix / name.replace("/", "--")
    folder.mkdir(parents=True, exist_ok=True)
    agreement = folder / "tos_agreed.txt"
    if not agreement.exists():  # agreed through COQUI_TOS_AGREED=1: record it for the service
        agreement.write_text("I have read, understood and agreed to the Terms and Conditions.")
status = named_model_status(name)
if not status.present:
    sys.exit(f"{name} is still not usable: {status.reason}")
print(f"{name}: {status.reason}")
print(f"Serve it with: TTS_ENGINE=coqui COQUI_MODEL={name} ./scripts/serve.sh")
PY
