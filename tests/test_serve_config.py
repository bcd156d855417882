"""serve_config.yaml is a valid Ray Serve config, and the launcher's overrides change what they say."""
from __future__ import annotations

import warnings

import pytest

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)  # ray's own pydantic fields, at import
    pytest.importorskip("ray", reason="the ray extra is not installed (scripts/install.sh --dev installs it)")
    from ray.serve.schema import ServeDeploySchema

from runtime.serve_app import DEFAULT_CONFIG, serve_config  # noqa: E402

pytestmark = pytest.mark.unit


def deployment_of(config: dict) -> dict:
    (application,) = config["applications"]
    (deployment,) = application["deployments"]
    return deployment


def test_the_shipped_config_places_one_replica_per_gpu_and_autoscales():
    config = serve_config(DEFAULT_CONFIG)
    ServeDeploySchema.model_validate(config)  # what `serve deploy` checks
    deployment = deployment_of(config)
    assert deployment["ray_actor_options"]["num_gpus"] == 1
    scaling = deployment["autoscaling_config"]
    assert 1 <= scaling["min_replicas"] < scaling["max_replicas"] and scaling["target_ongoing_requests"] > 0
    assert config["applications"][0]["import_path"] == "runtime.serve_app:app"


def test_a_fixed_replica_count_on_cpus_replaces_autoscaling_and_gpus():
    config = serve_config(DEFAULT_CONFIG, host="127.0.0.1", port=9123, replicas=2, gpus_per_replica=0,
                          cpus_per_replica=1, env={"AVATAR_BACKEND": "meshwarp"}, max_ongoing_requests=2)
    ServeDeploySchema.model_validate(config)
    deployment = deployment_of(config)
    assert deployment["num_replicas"] == 2 and "autoscaling_config" not in deployment
    assert deployment["ray_actor_options"] == {"num_cpus": 1}
    assert deployment["max_ongoing_requests"] == 2
    assert config["http_options"]["port"] == 9123
    env = config["applications"][0]["runtime_env"]["env_vars"]
    assert env["AVATAR_BACKEND"] == "meshwarp" and env["PORT"] == "9123"


def test_a_misspelt_option_is_refused_not_ignored():
    with pytest.raises(ValueError, match="max_ongoing_request"):
        serve_config(DEFAULT_CONFIG, max_ongoing_request=2)


def test_a_fixed_replica_count_wins_over_the_local_clusters_autoscaling_cap():
    # `python -m runtime.serve_app --replicas 1` passes both: the count and fit_local_cluster's cap
    capped = {"min_replicas": 1, "max_replicas": 1, "target_ongoing_requests": 12}
    config = serve_config(DEFAULT_CONFIG, replicas=1, gpus_per_replica=1, autoscaling_config=capped)
    ServeDeploySchema.model_validate(config)
    deployment = deployment_of(config)
    assert deployment["num_replicas"] == 1 and "autoscaling_config" not in deployment
    assert deployment["ray_actor_options"]["num_gpus"] == 1
