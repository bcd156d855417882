"""The Docker deployment: Dockerfile.gpu-service, docker-compose.yml, .env.local, .env.cloud.

No Docker engine runs here, so the files are checked the ways that need none: hadolint lints the
Dockerfile, the compose file is validated against the compose specification (offline, with the
schema vendored in check-jsonschema), and the tests below check that the image installs and starts
the way the README's ./scripts/serve.sh does and that every setting named is a real Settings field.
"""
from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Iterator

import pytest
import yaml
from dotenv import dotenv_values

from runtime.config import Settings

pytestmark = pytest.mark.packaging

REPO = Path(__file__).resolve().parents[1]
DOCKERFILE = REPO / "Dockerfile.gpu-service"
COMPOSE_FILE = REPO / "docker-compose.yml"
SERVE_SCRIPT = REPO / "scripts" / "serve.sh"
ENV_FILES = {".env.local": ("sadtalker", False), ".env.cloud": ("liveportrait", True)}
SERVICE = "realtime-avatar-gpu"
SETTINGS_FIELDS = set(Settings.model_fields)


def dev_tool(name: str) -> str:
    """A command-line tool of the dev extra: the one beside this interpreter first, then PATH."""
    beside_python = Path(sys.executable).parent / name
    if beside_python.is_file():
        return str(beside_python)
    found = shutil.which(name)
    if found is None:
        pytest.skip(f"{name} is not installed; it comes with the dev extra: ./scripts/install.sh --dev")
    return found


def dockerfile_instructions(path: Path = DOCKERFILE) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order, with continuation lines joined and comments dropped."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for line in path.read_text().splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue  # comments may sit between continuation lines too
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        keyword, _, arguments = (pending + stripped).partition(" ")
        instructions.append((keyword.upper(), arguments.strip()))
        pending = ""
    return instructions


def instruction_args(keyword: str) -> list[str]:
    return [arguments for found, arguments in dockerfile_instructions() if found == keyword]


def serve_script_commands() -> list[str]:
    """The commands scripts/serve.sh runs, comments and shell options left out."""
    lines = [line.strip() for line in SERVE_SCRIPT.read_text().splitlines()]
    return [line for line in lines if line and not line.startswith(("#", "set ", "cd "))]


def install_script_of_serve() -> str:
    """The install script serve.sh runs before it serves, as written there (e.g. ./scripts/install.sh)."""
    scripts = [word for command in serve_script_commands() for word in shlex.split(command)
               if re.fullmatch(r"\./scripts/[\w-]+\.sh", word)]
    assert len(scripts) == 1, f"serve.sh should run exactly one setup script, found {scripts}"
    return scripts[0]


def compose_service() -> dict:
    return yaml.safe_load(COMPOSE_FILE.read_text())["services"][SERVICE]


def clear_settings_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """So that only the file under test feeds Settings (names are case-insensitive)."""
    for name in list(os.environ):
        if name.lower() in SETTINGS_FIELDS:
            monkeypatch.delenv(name)


# --- Linters -----------------------------------------------------------------------------------

def test_dockerfile_passes_hadolint():
    # Default failure threshold: any finding at all, down to style and info, fails the build.
    result = subprocess.run([dev_tool("hadolint"), "--no-color", str(DOCKERFILE)],
                            cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, f"hadolint findings:\n{result.stdout}{result.stderr}"


def check_compose(path: Path) -> subprocess.CompletedProcess:
    # The compose-spec schema ships inside check-jsonschema, so this needs no network.
    return subprocess.run([dev_tool("check-jsonschema"), "--builtin-schema", "vendor.compose-spec", str(path)],
                          cwd=REPO, capture_output=True, text=True, timeout=120)


def test_compose_file_follows_the_compose_specification():
    result = check_compose(COMPOSE_FILE)
    assert result.returncode == 0, f"compose-spec validation failed:\n{result.stdout}{result.stderr}"


def test_compose_validation_rejects_a_misspelt_gpu_reservation(tmp_path):
    """The schema is strict enough to matter: a misspelt key in the GPU reservation fails it."""
    document = yaml.safe_load(COMPOSE_FILE.read_text())
    device = document["services"][SERVICE]["deploy"]["resources"]["reservations"]["devices"][0]
    device["capabilitys"] = device.pop("capabilities")
    broken = tmp_path / "docker-compose.yml"
    broken.write_text(yaml.safe_dump(document))
    result = check_compose(broken)
    assert result.returncode != 0
    assert "capabilities" in result.stdout + result.stderr


# --- The image installs and starts like ./scripts/serve.sh ------------------------------------

def test_readme_serve_command_runs_the_install_script():
    readme = REPO / "README.md"
    assert readme.is_file(), "README.md is missing: it gives the serve command the Dockerfile follows"
    assert "./scripts/serve.sh" in readme.read_text()
    assert install_script_of_serve() == "./scripts/install.sh"


def test_dockerfile_installs_with_the_script_serve_sh_runs():
    install_script = install_script_of_serve()
    instructions = dockerfile_instructions()
    runs_install = [index for index, (keyword, arguments) in enumerate(instructions)
                    if keyword == "RUN" and re.search(rf"(^|[\s;&|]){re.escape(install_script)}\b", arguments)]
    assert len(runs_install) == 1, f"the Dockerfile should RUN {install_script} once"
    install_index = runs_install[0]
    copied_before = " ".join(arguments for keyword, arguments in instructions[:install_index] if keyword == "COPY")
    assert install_script.removeprefix("./") in copied_before, "the install script is copied in before it runs"
    assert "pyproject.toml" in copied_before, "install.sh installs the project from pyproject.toml"
    # install.sh picks the extras from AVATAR_BACKEND: the build arg must reach it.
    assert "AVATAR_BACKEND" in instructions[install_index][1]


def test_dockerfile_installs_for_liveportrait_by_default():
    # The cloud default; install.sh adds the engines' extra (torch) for it.
    build_args = dict(arg.split("=", 1) for arg in instruction_args("ARG") if "=" in arg)
    assert build_args["AVATAR_BACKEND"] == "liveportrait"


def test_dockerfile_starts_the_service_as_serve_sh_does():
    serve_exec = [command for command in serve_script_commands() if command.startswith("exec ")]
    assert serve_exec and serve_exec[-1].endswith("-m runtime.gpu_service")
    (cmd,) = instruction_args("CMD")
    assert json.loads(cmd) == ["python", "-m", "runtime.gpu_service"]
    # `python` must be the venv install.sh built (install.sh creates it at $VENV).
    environment = " ".join(instruction_args("ENV"))
    venv = re.search(r"\bVENV=(\S+)", environment).group(1)
    assert re.search(rf"\bPATH=(\$VENV|{re.escape(venv)})/bin:", environment)


def test_dockerfile_base_user_health_and_models_volume():
    (base,) = instruction_args("FROM")
    image, _, tag = base.partition(":")
    assert image == "nvidia/cuda" and tag and tag != "latest"
    assert "ubuntu24.04" in tag, "Ubuntu 24.04 ships python3.12, inside pyproject's requires-python"
    user = instruction_args("USER")[-1].split(":")[0]
    assert user not in ("root", "0"), "the service must not run as root"
    (healthcheck,) = instruction_args("HEALTHCHECK")
    assert "/health" in healthcheck and "PORT" in healthcheck
    environment = " ".join(instruction_args("ENV"))
    assert "MODELS_DIR=/models" in environment and "PORT=8001" in environment
    assert any("/models" in volume for volume in instruction_args("VOLUME"))


@pytest.fixture
def health_server() -> Iterator[dict]:
    """A stand-in for the service on a free local port: GET /health/ready answers `state["status"]`."""
    state = {"status": 200}

    class Health(BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(state["status"] if self.path == "/health/ready" else 404)
            self.end_headers()
            self.wfile.write(b'{"status": "healthy"}')

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Health)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    state["port"] = server.server_address[1]
    yield state
    server.shutdown()
    server.server_close()


def run_probe(argv: list[str], port: int) -> int:
    """Run a healthcheck's exec-form command here, with this interpreter as its `python`."""
    assert argv[0] == "python"
    environment = {"PATH": os.environ.get("PATH", ""), "PORT": str(port)}
    return subprocess.run([sys.executable, *argv[1:]], env=environment, capture_output=True, timeout=30).returncode


@pytest.mark.parametrize("source", ["Dockerfile", "compose"])
def test_healthcheck_passes_on_200_and_fails_otherwise(source, health_server):
    if source == "Dockerfile":
        (healthcheck,) = instruction_args("HEALTHCHECK")
        argv = json.loads(healthcheck.split(" CMD ", 1)[1])  # exec form, so no shell is needed
    else:
        test = compose_service()["healthcheck"]["test"]
        assert test[0] == "CMD"
        # The container port is fixed at 8001; aim the same probe at the stand-in's port.
        argv = [part.replace(":8001/", f":{health_server['port']}/") for part in test[1:]]
    assert run_probe(argv, health_server["port"]) == 0
    health_server["status"] = 503
    assert run_probe(argv, health_server["port"]) != 0


def test_dockerignore_keeps_weights_and_environments_out_of_the_image():
    patterns = {line.strip().rstrip("/") for line in (REPO / ".dockerignore").read_text().splitlines()
                if line.strip() and not line.startswith("#")}
    # runtime/ is copied whole, so its weights folder must be ignored explicitly.
    assert {"runtime/pretrained_weights", ".venv", ".git", ".env"} <= patterns


# --- Compose -----------------------------------------------------------------------------------

def test_compose_names_the_container_and_builds_the_gpu_image():
    service = compose_service()
    assert service["container_name"] == SERVICE
    assert (REPO / service["build"]["context"] / service["build"]["dockerfile"]).resolve() == DOCKERFILE
    dockerfile_args = {arg.split("=", 1)[0] for arg in instruction_args("ARG")}
    assert set(service["build"]["args"]) <= dockerfile_args
    assert service["build"]["args"]["AVATAR_BACKEND"] == service["environment"]["AVATAR_BACKEND"], \
        "the image installs for the backend the container runs"


def test_compose_publishes_port_8001_and_keeps_the_container_port_fixed():
    service = compose_service()
    assert service["ports"] == ["${PORT:-8001}:8001"]
    # PORT picks the host port; inside, the service always listens on 8001, which the healthcheck probes.
    assert service["environment"]["PORT"] == 8001 == Settings.model_fields["port"].default
    assert "8001/health" in " ".join(service["healthcheck"]["test"])


def test_compose_reserves_an_nvidia_gpu():
    (device,) = compose_service()["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia" and "gpu" in device["capabilities"]
    assert device.get("count", device.get("device_ids")) is not None


def test_compose_mounts_the_weights_at_models_dir():
    service = compose_service()
    volumes = {volume["target"]: volume for volume in service["volumes"]}
    assert service["environment"]["MODELS_DIR"] == "/models"
    assert volumes["/models"]["source"].startswith("${MODELS_DIR:-")
    assert volumes["/models"]["read_only"] is True


def test_compose_keeps_the_compile_cache_writable_across_restarts():
    service = compose_service()
    volumes = {volume["target"]: volume for volume in service["volumes"]}
    cache = service["environment"]["LIVEPORTRAIT_COMPILE_CACHE_DIR"]
    assert cache.startswith("/cache/")
    assert volumes["/cache"]["type"] == "volume" and not volumes["/cache"].get("read_only")
    assert volumes["/cache"]["source"] in yaml.safe_load(COMPOSE_FILE.read_text())["volumes"]


def test_compose_settings_come_from_the_environment_or_dot_env():
    service = compose_service()
    assert service["env_file"] == [{"path": ".env", "required": False}]
    unknown = {name for name in service["environment"] if name.lower() not in SETTINGS_FIELDS}
    assert not unknown, f"not Settings fields: {unknown}"
    assert service["environment"]["AVATAR_BACKEND"] == "${AVATAR_BACKEND:-liveportrait}"


# --- .env.local and .env.cloud -----------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(ENV_FILES))
def test_env_file_names_only_settings_fields(name):
    values = dotenv_values(REPO / name)
    assert values, f"{name} sets nothing"
    unknown = sorted(key for key in values if key.lower() not in SETTINGS_FIELDS)
    assert not unknown, f"{name}: not fields of runtime.config.Settings: {unknown}"
    assert all(value for value in values.values()), f"{name}: an empty value does not mean unset to Settings"


@pytest.mark.parametrize("name", sorted(ENV_FILES))
def test_settings_load_from_env_file(name, monkeypatch):
    clear_settings_environment(monkeypatch)
    settings = Settings(_env_file=REPO / name)
    backend, use_cuda = ENV_FILES[name]
    assert settings.avatar_backend == backend
    assert settings.use_cuda is use_cuda
    assert settings.models_dir == Path("runtime/pretrained_weights")
