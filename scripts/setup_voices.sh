#!/usr/bin/env bash
# Download official Piper voices (rhasspy/piper-voices on Hugging Face) for the languages you name,
# into $PIPER_VOICES_DIR as <name>.onnx + <name>.onnx.json, where the service finds them. Files
# already present with the hub's size are skipped. Needs python3 with huggingface_hub.
#   PIPER_VOICES_DIR=~/piper-voices ./scripts/setup_voices.sh de fr        # one voice per language
#   PIPER_VOICES_DIR=~/piper-voices ./scripts/setup_voices.sh de_DE-thorsten-medium  # a voice by name
# then serve with the same PIPER_VOICES_DIR: texts in those languages are read by those voices.
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
MODELS_DIR="${MODELS_DIR:-$REPO_ROOT/runtime/pretrained_weights}"
PIPER_VOICES_DIR="${PIPER_VOICES_DIR:-$MODELS_DIR/piper_voices}"
PYTHON="${PYTHON:-python3}"
[ $# -ge 1 ] || { sed -n '2,8p' "$0"; exit 2; }

# One well-rated voice per language family (the name spells the repo path: lang_REGION-dataset-quality).
declare -A DEFAULT_VOICE=(
  [ar]=ar_JO-kareem-medium [ca]=ca_ES-upc_ona-medium [cs]=cs_CZ-jirka-medium [da]=da_DK-talesyntese-medium
  [de]=de_DE-thorsten-medium [el]=el_GR-rapunzelina-low [en]=en_US-lessac-medium [es]=es_ES-davefx-medium
  [fi]=fi_FI-harri-medium [fr]=fr_FR-siwis-medium [hu]=hu_HU-anna-medium [it]=it_IT-riccardo-x_low
  [nl]=nl_BE-nathalie-medium [no]=no_NO-talesyntese-medium [pl]=pl_PL-darkman-medium [pt]=pt_BR-faber-medium
  [ru]=ru_RU-irina-medium [sv]=sv_SE-nst-medium [tr]=tr_TR-dfki-medium [uk]=uk_UA-ukrainian_tts-medium
  [vi]=vi_VN-vais1000-medium [zh]=zh_CN-huayan-medium
)

mkdir -p "$PIPER_VOICES_DIR"
for wanted in "$@"; do
  voice="${DEFAULT_VOICE[$wanted]:-$wanted}"
  if [[ ! "$voice" =~ ^([a-z]{2,3})_([A-Z]{2})-([A-Za-z0-9_]+)-(x_low|low|medium|high)$ ]]; then
    echo "unknown language or voice '$wanted': name a language (${!DEFAULT_VOICE[*]}) or a voice like de_DE-thorsten-medium" >&2
    exit 2
  fi
  family="${BASH_REMATCH[1]}"; code="${family}_${BASH_REMATCH[2]}"; dataset="${BASH_REMATCH[3]}"; quality="${BASH_REMATCH[4]}"
  path="$family/$code/$dataset/$quality/$voice"
  "$PYTHON" "$REPO_ROOT/scripts/hf_fetch.py" rhasspy/piper-voices "$PIPER_VOICES_DIR/.hub" "$path.onnx" "$path.onnx.json"
  # The service reads voices from the folder's top level.
  ln -sf ".hub/$path.onnx" "$PIPER_VOICES_DIR/$voice.onnx"
  ln -sf ".hub/$path.onnx.json" "$PIPER_VOICES_DIR/$voice.onnx.json"
  echo "voice $voice ready in $PIPER_VOICES_DIR"
done
echo "serve with PIPER_VOICES_DIR=$PIPER_VOICES_DIR"
