from __future__ import annotations

import os

import numpy as np
import pytest

from runtime.config import ENV_FILE_VARIABLE, PACKAGE_DIR

from .server import RunningServer, start_server

# Settings built in this process never read a developer's .env (servers get the same in start_server).
os.environ[ENV_FILE_VARIABLE] = ""

TIERS = ("unit", "equivalence", "service", "packaging", "gpu")


def pytest_collection_modifyitems(config, items):
    """Every test names its tier (a module-level `pytestmark`), so `-m` selections miss none."""
    untiered = [item.nodeid for item in items if not any(item.get_closest_marker(tier) for tier in TIERS)]
    if untiered:
        raise pytest.UsageError(f"tests without a tier marker ({', '.join(TIERS)}): {untiered[:10]}")


@pytest.fixture(scope="session")
def default_server(tmp_path_factory) -> RunningServer:
    """The service on the embedded default, as `./scripts/serve.sh` starts it (empty MODELS_DIR)."""
    models = tmp_path_factory.mktemp("no-models")
    with start_server(MODELS_DIR=str(models), DATA_DIR=str(tmp_path_factory.mktemp("data"))) as server:
        yield server


@pytest.fixture(scope="session")
def upstream():
    """SadTalker's upstream networks (sadtalker-z, a test-only reference); without it the test is
    skipped, or fails in CI."""
    from testkit.sadtalker_checkpoints import import_upstream, missing_reference

    modules = import_upstream()
    if modules is None:
        missing_reference("sadtalker-z")  # skipped here, a failure in CI
    return modules


@pytest.fixture(scope="session")
def astronaut() -> np.ndarray:
    """The bundled default portrait, (512, 512, 3) RGB uint8."""
    from PIL import Image

    return np.asarray(Image.open(PACKAGE_DIR / "assets" / "default_avatar.png").convert("RGB"))


@pytest.fixture(scope="session")
def face_locator():
    from runtime.media.landmarks import FaceLocator

    locator = FaceLocator()
    yield locator
    locator.close()
