"""Registered avatars: a portrait prepared once, used by id, surviving a restart."""
from __future__ import annotations

import base64
import io
import re

import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from .server import png_base64, save_mp4, start_server

pytestmark = pytest.mark.service


def _preparations(client) -> float:
    for family in text_string_to_metric_families(client.get("/metrics").text):
        for sample in family.samples:
            if sample.name == "avatar_portrait_preparations_total":
                return sample.value
    raise AssertionError("no avatar_portrait_preparations_total in /metrics")


def test_an_avatar_registered_survives_a_restart_and_is_not_prepared_again(tmp_path, astronaut):
    data_dir = tmp_path / "data"
    env = dict(MODELS_DIR=str(tmp_path / "none"), DATA_DIR=str(data_dir))
    with start_server(**env) as server, server.client() as client:
        registered = client.post("/avatars", json={"image": png_base64(astronaut)})
        assert registered.status_code == 201, registered.text
        avatar_id = registered.json()["avatar_id"]
        assert re.fullmatch(r"[0-9a-f]{32}", avatar_id) and registered.json()["prepared_for"] == ["meshwarp"]
        again = client.post("/avatars", files={"image": ("same.png", base64.b64decode(png_base64(astronaut)))})
        assert again.status_code == 200 and again.json()["avatar_id"] == avatar_id  # same picture, same avatar
        assert [a["avatar_id"] for a in client.get("/avatars").json()["avatars"]] == [avatar_id]

    with start_server(**env) as server, server.client() as client:
        after_warm_up = _preparations(client)
        assert client.get(f"/avatars/{avatar_id}").json()["width"] == 512
        response = client.post("/generate", json={"text": "I was registered before the restart.", "avatar_id": avatar_id})
        path = save_mp4(response, tmp_path)
        assert path.stat().st_size > 10_000
        multipart = client.post("/generate", files={"text": (None, "And by multipart."), "avatar_id": (None, avatar_id)})
        assert multipart.status_code == 200, multipart.text
        assert _preparations(client) == after_warm_up, "the registered portrait was prepared again"
        assert f"Avatar {avatar_id}: meshwarp preparation read from disk" in server.log()

        assert client.delete(f"/avatars/{avatar_id}").status_code == 204
        gone = client.post("/generate", json={"text": "Gone.", "avatar_id": avatar_id})
        assert gone.status_code == 404 and gone.json()["error"] == "unknown_avatar"
        assert client.get(f"/avatars/{avatar_id}").status_code == 404
        assert client.get("/avatars/..%2F..%2Fetc").status_code == 404


def test_a_bad_portrait_is_refused_at_registration_with_the_usual_errors(default_server):
    from PIL import Image
    from skimage import data as photos

    cat = np.asarray(Image.fromarray(photos.chelsea()).convert("RGB"))
    with default_server.client() as client:
        registered_before = client.get("/avatars").json()  # the server is shared: compare, do not expect []
        no_face = client.post("/avatars", json={"image": png_base64(cat)})
        garbage = client.post("/avatars", json={"image": base64.b64encode(b"not a picture at all").decode()})
        not_base64 = client.post("/avatars", json={"image": "%%%"})
        extra = client.post("/avatars", json={"image": png_base64(cat), "text": "no"})
        assert client.get("/avatars").json() == registered_before, "a refused portrait was stored"
    assert no_face.status_code == 422 and no_face.json()["error"] == "no_face", no_face.text
    assert garbage.status_code == 422 and garbage.json()["error"] == "invalid_image"
    assert not_base64.status_code == 422 and not_base64.json()["error"] == "invalid_image"
    assert extra.status_code == 422


def test_a_preparation_stored_by_another_version_is_prepared_again_not_a_500(tmp_path, astronaut):
    """An upgrade that adds a field to the backend's preparation: the stored .npz lacks it. The avatar
    still works; its preparation is done again once and stored in the new layout."""
    import io

    from PIL import Image

    from runtime.avatars import AvatarStore
    from runtime.config import Settings
    from runtime.media.portrait import PortraitDecoder
    from runtime.models.meshwarp_model import MeshWarpBackend

    settings = Settings(_env_file=None)
    decoder = PortraitDecoder(max_bytes=10**7, max_pixels=10**7, max_output_side=1024)
    buffer = io.BytesIO()
    Image.fromarray(astronaut).save(buffer, format="PNG")
    info, _ = AvatarStore(tmp_path, MeshWarpBackend.load(settings, None), decoder, 4, 10).register(buffer.getvalue())
    stored = tmp_path / "avatars" / info.avatar_id / "meshwarp.npz"
    with np.load(stored) as arrays:
        older = {name: arrays[name] for name in arrays.files if not name.startswith("mouth.")}
    np.savez(stored, **older)  # as a version whose preparation had no `mouth` wrote it

    backend = MeshWarpBackend.load(settings, None)
    avatar = AvatarStore(tmp_path, backend, decoder, 4, 10).get(info.avatar_id)
    assert avatar.prepared is not None and backend.preparations == 1
    with np.load(stored) as arrays:
        assert any(name.startswith("mouth.") for name in arrays.files)
    again = MeshWarpBackend.load(settings, None)
    AvatarStore(tmp_path, again, decoder, 4, 10).get(info.avatar_id)
    assert again.preparations == 0  # the rewritten file is read as it is
