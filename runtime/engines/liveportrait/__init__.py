"""Our LivePortrait inference engine: the human-portrait networks on the official checkpoints, driven by speech."""
