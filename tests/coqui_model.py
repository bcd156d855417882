"""Small Coqui models with random weights, saved as local checkpoints (model.pth + config.json),
the same files a user points COQUI_MODEL_PATH / COQUI_CONFIG_PATH at: a VITS (one voice, a speaker
table, or YourTTS-like cloning) and a tiny XTTS.

Random weights speak noise, so one thing is set by hand to make the VITS output length that of speech:
the (deterministic) duration predictor's last layer gives every input token FRAMES_PER_TOKEN
spectrogram frames. With coqui's interleaved blank tokens that is about 70 ms a character.

Needs coqui-tts (run it with the coqui venv's python):
    .venv-coqui/bin/python -m tests.coqui_model OUT_DIR [--speakers alice,bob] [--cloning | --xtts]
prints the checkpoint and config paths as JSON.
"""
from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Sequence

FRAMES_PER_TOKEN = 3  # 3 x 256 samples at 22,050 Hz = 35 ms a token, ~70 ms a character with blanks
HOP_LENGTH = 256  # coqui's VITS default; the decoder's upsample rates (8, 8, 2, 2) multiply to it
SAMPLE_RATE = 22050
D_VECTOR_DIM = 64  # speaker embedding size of the cloning variant
MAX_XTTS_CODES = 40  # the tiny XTTS says at most 40 x 1024 samples (1.9 s) a sentence


def expected_samples(token_count: int) -> int:
    """Waveform samples the model makes for one sentence of token_count tokens (before padding)."""
    return token_count * FRAMES_PER_TOKEN * HOP_LENGTH


def build_speaker_encoder(out_dir: Path) -> tuple[Path, Path]:
    """A random LSTM speaker encoder (16 kHz, 80 mels -> D_VECTOR_DIM): encoder.pth + encoder_config.json,
    the pair a cloning VITS (YourTTS-like) names in speaker_encoder_model_path / _config_path."""
    import torch
    from TTS.encoder.configs.speaker_encoder_config import SpeakerEncoderConfig
    from TTS.encoder.utils.generic_utils import setup_encoder_model

    config = SpeakerEncoderConfig(
        model_params={"model_name": "lstm", "input_dim": 80, "proj_dim": D_VECTOR_DIM, "lstm_dim": 64,
                      "num_lstm_layers": 1, "use_lstm_with_projection": True},
        # Training-only fields without defaults; the config cannot be saved without them.
        num_classes_in_batch=2, num_utter_per_class=2, num_loader_workers=0,
    )
    config.audio.sample_rate = 16000
    config.audio.num_mels = 80
    encoder = setup_encoder_model(config)
    model_path, config_path = out_dir / "encoder.pth", out_dir / "encoder_config.json"
    torch.save({"model": encoder.state_dict()}, model_path)
    config.save_json(str(config_path))
    return model_path, config_path


def build_random_vits(
    out_dir: Path, speakers: Sequence[str] = (), seed: int = 0, cloning: bool = False
) -> tuple[Path, Path]:
    """Write out_dir/model.pth ({"model": state_dict}) and out_dir/config.json; return both paths.

    speakers: names of a multi-speaker model, or () for one voice. cloning: the speakers are
    d-vectors (random, in speakers.json) and a random speaker encoder computes new ones from a
    request's speaker_wav, as YourTTS does; otherwise they are rows of a speaker embedding table."""
    import torch
    from TTS.tts.configs.vits_config import VitsConfig
    from TTS.tts.models.vits import Vits, VitsArgs

    torch.manual_seed(seed)
    out_dir.mkdir(parents=True, exist_ok=True)
    cloning_args = {}
    if cloning:
        encoder_path, encoder_config_path = build_speaker_encoder(out_dir)
        d_vectors = out_dir / "speakers.json"  # coqui's d-vector file: clip -> {name, embedding}
        d_vectors.write_text(json.dumps({
            f"{name}.wav": {"name": name, "embedding": torch.randn(D_VECTOR_DIM).tolist()} for name in speakers
        }))
        cloning_args = dict(
            use_d_vector_file=True, d_vector_file=[str(d_vectors)], d_vector_dim=D_VECTOR_DIM,
            speaker_encoder_model_path=str(encoder_path), speaker_encoder_config_path=str(encoder_config_path),
        )
    args = VitsArgs(
        # Narrower than the released models (192 channels, 6 encoder layers): same code paths, ~10x faster.
        hidden_channels=96,
        hidden_channels_ffn_text_encoder=192,
        num_layers_text_encoder=2,
        upsample_initial_channel_decoder=128,
        use_sdp=False,  # the plain duration predictor is deterministic, so lengths are exact
        init_discriminator=False,  # training only; it would be most of the checkpoint
        inference_noise_scale=0.0,  # no sampling noise: the same text and voice give the same samples
        use_speaker_embedding=bool(speakers) and not cloning,
        **cloning_args,
    )
    config = VitsConfig(model_args=args, speakers=[] if cloning else list(speakers), run_name="random-vits-for-tests")
    config.audio.sample_rate = SAMPLE_RATE
    config.audio.hop_length = HOP_LENGTH
    config.audio.do_trim_silence = False  # random output has no silence to find: keep lengths exact
    model = Vits(config)
    model.eval()

    # Named step: calibrate the durations. logw = proj(h); a zero weight and a bias of
    # log(FRAMES_PER_TOKEN - 0.5) makes ceil(exp(logw)) exactly FRAMES_PER_TOKEN for every token.
    with torch.no_grad():
        model.duration_predictor.proj.weight.zero_()
        model.duration_predictor.proj.bias.fill_(math.log(FRAMES_PER_TOKEN - 0.5))

    model_path, config_path = out_dir / "model.pth", out_dir / "config.json"
    torch.save({"model": model.state_dict()}, model_path)
    config.save_json(str(config_path))
    return model_path, config_path


XTTS_LANGUAGES = ["en", "de"]


def build_random_xtts(out_dir: Path, speakers: Sequence[str] = (), seed: int = 0) -> tuple[Path, Path]:
    """A tiny XTTS (1-layer GPT of 64 channels, 66 audio codes, real-size HiFi-GAN decoder and
    speaker encoder) in the layout of the released one: model.pth, config.json, vocab.json and,
    with speakers, speakers_xtts.pth holding each preset voice's conditioning.

    Its GPT stops at a random point (at most MAX_XTTS_CODES codes of 1024 samples a sentence)."""
    import string

    import torch
    from tokenizers import Tokenizer, models
    from TTS.tts.configs.xtts_config import XttsConfig
    from TTS.tts.models.xtts import Xtts

    torch.manual_seed(seed)
    out_dir.mkdir(parents=True, exist_ok=True)

    # Named step: a character-level BPE vocabulary with XTTS's special tokens.
    specials = ["[STOP]", "[UNK]", "[SPACE]", "[START]", *(f"[{lang}]" for lang in XTTS_LANGUAGES)]
    characters = list(string.ascii_lowercase + string.digits + ".,!?'-:;\"")
    tokenizer = Tokenizer(models.BPE(vocab={t: i for i, t in enumerate(specials + characters)}, merges=[], unk_token="[UNK]"))
    tokenizer.add_special_tokens(specials)
    tokenizer.save(str(out_dir / "vocab.json"))

    config = XttsConfig(languages=list(XTTS_LANGUAGES))
    args = config.model_args
    args.gpt_layers, args.gpt_n_model_channels, args.gpt_n_heads, args.decoder_input_dim = 1, 64, 2, 64
    args.gpt_use_perceiver_resampler = True  # as in XTTS v2
    args.gpt_num_audio_tokens, args.gpt_start_audio_token, args.gpt_stop_audio_token = 66, 64, 65
    args.gpt_max_audio_tokens = MAX_XTTS_CODES
    model = Xtts(config)
    model.tokenizer.__init__(vocab_file=str(out_dir / "vocab.json"))
    model.init_models()  # sizes the GPT's text embedding from the vocabulary
    model.eval()
    torch.save({"model": model.state_dict()}, out_dir / "model.pth")
    config.save_json(str(out_dir / "config.json"))

    # Named step: preset voices, conditioned by the model itself on random audio (the shapes of
    # the released speakers_xtts.pth: latents (1, 32, channels), embedding (1, 512, 1)).
    if speakers:
        voices = {}
        for name in speakers:
            audio = 0.1 * torch.randn(1, 3 * 22050)
            voices[name] = {
                "gpt_cond_latent": model.get_gpt_cond_latents(audio, 22050),
                "speaker_embedding": model.get_speaker_embedding(audio, 22050),
            }
        torch.save(voices, out_dir / "speakers_xtts.pth")
    return out_dir / "model.pth", out_dir / "config.json"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--speakers", default="", help="comma-separated speaker names (multi-speaker model)")
    parser.add_argument("--cloning", action="store_true", help="d-vector speakers + a speaker encoder (clones speaker_wav)")
    parser.add_argument("--xtts", action="store_true", help="a tiny XTTS instead of a VITS")
    options = parser.parse_args()
    speakers = [s for s in options.speakers.split(",") if s]
    if options.xtts:
        model_path, config_path = build_random_xtts(options.out_dir, speakers)
    else:
        model_path, config_path = build_random_vits(options.out_dir, speakers, cloning=options.cloning)
    print(json.dumps({"model_path": str(model_path), "config_path": str(config_path)}))


if __name__ == "__main__":
    main()
