"""Users send their own portraits: anywhere in the frame, any colour mode, small or tall."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from runtime.media.lipsync import measure_lip_sync

from .server import png_base64, save_mp4

pytestmark = pytest.mark.service


def _off_centre_in_wide(astronaut):
    canvas = np.full((600, 1400, 3), (90, 120, 150), np.uint8)
    canvas[60:572, 820:1332] = astronaut
    return canvas


def _greyscale(astronaut):
    return np.asarray(Image.fromarray(astronaut).convert("L"))


def _small(astronaut):
    return np.asarray(Image.fromarray(astronaut[30:330, 70:370]).resize((200, 200), Image.LANCZOS))


def _portrait_orientation(astronaut):
    canvas = np.full((900, 512, 3), 235, np.uint8)
    canvas[300:812] = astronaut
    return canvas


@pytest.mark.parametrize("make", [_off_centre_in_wide, _greyscale, _small, _portrait_orientation])
def test_custom_portrait_is_animated_whole(default_server, astronaut, tmp_path, make):
    portrait = make(astronaut)
    with default_server.client() as client:
        response = client.post("/generate", json={"text": "Look, this is my own photo.", "image": png_base64(portrait)})
    path = save_mp4(response, tmp_path)
    report = measure_lip_sync(path)
    assert report.face_frames == report.frames
    assert max(report.correlations[lag] for lag in (-1, 0, 1)) >= 0.5, report.summary()
    assert abs(report.video_duration - report.audio_duration) <= 0.1
    import av

    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        height, width = portrait.shape[:2]
        if (stream.width, stream.height) != (width, height) and max(height, width) <= 1024:
            # A face under min_face_side is enlarged: the video is larger than the photo, same shape.
            assert min(stream.width, stream.height) >= 256 and abs(stream.width / stream.height - width / height) < 0.01
        elif max(height, width) <= 1024:  # larger portraits are scaled down to MAX_OUTPUT_SIDE (1024)
            assert (stream.width, stream.height) == (width - width % 2, height - height % 2)
        else:
            assert max(stream.width, stream.height) in (1023, 1024)
            assert abs(stream.width / stream.height - width / height) < 0.01


def test_photo_without_a_human_face_is_refused(default_server):
    from skimage.data import chelsea  # a cat

    with default_server.client() as client:
        response = client.post("/generate", json={"text": "Meow.", "image": png_base64(chelsea())})
    assert response.status_code == 422
    assert response.json()["error"] == "no_face"
    assert "face" in response.json()["detail"]


def test_small_face_is_enlarged_and_lip_synced(default_server, astronaut, tmp_path):
    import av

    whole_at_200 = np.asarray(Image.fromarray(astronaut).resize((200, 200), Image.LANCZOS))  # a 41 px face
    with default_server.client() as client:
        response = client.post("/generate", json={"text": "Look, this is my own photo, small as it is.",
                                                   "image": png_base64(whole_at_200)})
    path = save_mp4(response, tmp_path)
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        assert stream.width == stream.height >= 256  # enlarged, same shape
    report = measure_lip_sync(path)
    assert report.face_frames == report.frames
    assert max(report.correlations[lag] for lag in (-1, 0, 1)) >= 0.3


def test_face_too_small_to_animate_is_refused(default_server, astronaut):
    tiny = np.full((256, 256, 3), 200, np.uint8)
    tiny[80:176, 80:176] = np.asarray(Image.fromarray(astronaut).resize((96, 96), Image.LANCZOS))  # a 20 px face
    with default_server.client() as client:
        response = client.post("/generate", json={"text": "Hello.", "image": png_base64(tiny)})
    assert response.status_code == 422
    assert response.json()["error"] == "no_face" and response.json()["request_id"]


def test_the_face_a_user_picks_in_a_group_photo_is_the_one_that_talks(default_server, astronaut, tmp_path):
    from runtime.media.lipsync import read_video

    from testkit.portraits import group

    photo = group(astronaut)  # astronauts 240, 300 and 200 px tall at x = 20, 280, 600
    faces = {"left": (20, 260), "middle": (280, 580), "right": (600, 800)}
    with default_server.client() as client:
        by_index = client.post("/generate", json={"text": "It is my turn to speak now.", "image": png_base64(photo),
                                                  "backend_options": {"face": "1"}})
        by_point = client.post("/generate", json={"text": "It is my turn to speak now.", "image": png_base64(photo),
                                                  "backend_options": {"face": "700,80"}})
        nowhere = client.post("/generate", json={"text": "Hello.", "image": png_base64(photo),
                                                 "backend_options": {"face": "5,330"}})
        malformed = client.post("/generate", json={"text": "Hello.", "image": png_base64(photo),
                                                   "backend_options": {"face": "the tall one"}})

    def motion_by_face(response, name):
        frames, _ = read_video(save_mp4(response, tmp_path, f"{name}.mp4"))
        scale = frames[0].shape[1] / photo.shape[1]  # a small chosen face is enlarged with the photo
        grey = [frame.astype(np.float32).mean(axis=-1) for frame in frames]
        return {face: float(np.mean([np.abs(g[:, int(x0 * scale):int(x1 * scale)] - grey[0][:, int(x0 * scale):int(x1 * scale)]).mean()
                                     for g in grey[1:]]))
                for face, (x0, x1) in faces.items()}

    second_largest = motion_by_face(by_index, "by_index")
    assert second_largest["left"] > 4 * max(second_largest["middle"], second_largest["right"])
    at_point = motion_by_face(by_point, "by_point")
    assert at_point["right"] > 4 * max(at_point["middle"], at_point["left"])
    assert nowhere.status_code == 422 and nowhere.json()["error"] == "no_face"
    assert "no face at the point" in nowhere.json()["detail"]
    assert malformed.status_code == 422 and "x,y" in malformed.json()["detail"]
