"""Realtime avatar GPU service: text -> speech -> talking-head mp4."""
