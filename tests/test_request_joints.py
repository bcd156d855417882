"""The joints between layers, in-process: HTTP fields become a GenerationRequest; a backend's own knobs
travel as options its class validates; Settings read the project's .env, never the working directory's."""
from __future__ import annotations

import pytest

from runtime.api.routes import _to_generation_request
from runtime.config import ENV_FILE_VARIABLE, PROJECT_DIR, Settings, env_file
from runtime.errors import UserInputError
from runtime.models.meshwarp_model import MeshWarpBackend
from runtime.models.sadtalker_model import SadTalkerBackend

pytestmark = pytest.mark.unit


def test_multipart_text_fields_become_sadtalker_options():
    """A form sends every field as text: `size=512` and `pose_style=3` as the seed's body had them."""
    request = _to_generation_request({"text": "hi", "size": "512", "pose_style": "3", "fps": "20"}, {}, "r1")
    assert request.fps == 20 and request.backend_options == {}
    assert request.seed_options == {"size": 512, "pose_style": 3}
    options = SadTalkerBackend.parse_options(request.backend_options, request.seed_options)
    assert (options.size, options.pose_style) == (512, 3)


def test_backend_options_as_json_text_in_a_form():
    request = _to_generation_request({"text": "hi", "backend_options": '{"pose_style": 7}'}, {}, "r2")
    assert SadTalkerBackend.parse_options(request.backend_options, request.seed_options).pose_style == 7
    with pytest.raises(UserInputError, match="backend_options is not a JSON object"):
        _to_generation_request({"text": "hi", "backend_options": "{pose"}, {}, "r3")


def test_backend_options_override_the_seed_fields_and_are_checked_by_the_backend():
    options = SadTalkerBackend.parse_options({"size": 256}, {"size": 512, "pose_style": 1})
    assert (options.size, options.pose_style) == (256, 1)
    with pytest.raises(UserInputError, match="size: Input should be 256 or 512"):
        SadTalkerBackend.parse_options({"size": 384})
    with pytest.raises(UserInputError, match=r"pose_style: Input should be less than or equal to 45"):
        SadTalkerBackend.parse_options({}, {"pose_style": 99})


def test_a_backend_without_knobs_ignores_the_seed_fields_but_refuses_named_options():
    """The seed's top-level pose_style reached every backend and was ignored where it meant nothing;
    an option named in backend_options is a promise, so the wrong backend refuses it."""
    assert MeshWarpBackend.parse_options({}, {"pose_style": 3, "size": 512}) == MeshWarpBackend.options_model()
    with pytest.raises(UserInputError, match=r"backend_options for meshwarp \(it takes: face\): pose_style"):
        MeshWarpBackend.parse_options({"pose_style": 3})


def test_meshwarp_checks_which_face_when_the_request_arrives():
    assert MeshWarpBackend.parse_options({"face": 1}).face == 1
    assert MeshWarpBackend.parse_options({"face": "120,80"}).face == "120,80"
    with pytest.raises(UserInputError, match="face must be an index"):
        MeshWarpBackend.parse_options({"face": "the left one"})


def test_settings_read_the_projects_env_file_not_the_working_directorys(tmp_path, monkeypatch):
    (tmp_path / ".env").write_text("AVATAR_BACKEND=liveportrait\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(ENV_FILE_VARIABLE)
    monkeypatch.delenv("AVATAR_BACKEND", raising=False)
    assert env_file() == PROJECT_DIR / ".env"
    if not (PROJECT_DIR / ".env").exists():
        assert Settings().avatar_backend == "auto"
    monkeypatch.setenv(ENV_FILE_VARIABLE, str(tmp_path / ".env"))
    assert Settings().avatar_backend == "liveportrait"


def test_tests_never_read_a_developers_env_file():
    assert env_file() is None  # conftest empties AVATAR_ENV_FILE; start_server passes the same to servers
