"""Text-to-speech engines behind one interface (tts.base.TTSEngine), chosen by tts.factory."""
