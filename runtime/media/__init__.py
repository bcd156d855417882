"""Shared media code: speech, audio features, face landmarks, portraits, mp4 encoding."""
