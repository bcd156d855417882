"""The same FastAPI app as a Ray Serve deployment: one replica per GPU (or a share of the CPUs),
Ray's proxy in front routing HTTP and WebSocket traffic unchanged, autoscaling on ongoing requests.

Each replica is a whole service (its own models, device scheduler, avatar cache) built by
`create_app`; registered avatars live under DATA_DIR, which every replica must share (one machine,
or a shared volume across nodes). Every response names the replica that served it
(`X-Serve-Replica`); a WebSocket session stays on the replica that accepted it.

    serve run serve_config.yaml                  Ray's own CLI (needs `pip install .[ray]`)
    python -m runtime.serve_app                  a small local cluster, stopped on SIGTERM (serve.sh)
"""
from __future__ import annotations

import argparse
import asyncio
import logging
import os
import re
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any, Optional

import ray
import yaml
from fastapi import FastAPI
from prometheus_client import CollectorRegistry
from ray import serve
from ray.serve.schema import DeploymentSchema, ServeDeploySchema
from ray.util.metrics import Gauge

from .config import PROJECT_DIR, Settings, load_settings
from .gpu_service import create_app
from .process import configure_logging

log = logging.getLogger("runtime.serve_app")  # also when run as __main__

REPLICA_HEADER = b"x-serve-replica"
REQUEST_ID_HEADER = b"x-request-id"
_SAFE_REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")  # fit for a log line; else the app names the request
DEFAULT_CONFIG = PROJECT_DIR / "serve_config.yaml"


class ReplicaApp:
    """Pure ASGI around the service's app, for life inside a Ray replica:
    - every HTTP response and WebSocket accept carries `X-Serve-Replica: <replica id>`;
    - lifespan startup completes only once the models are loaded and warm, so Ray routes nothing
      to a replica that would answer 503 (Ray's readiness is the constructor returning);
    - lifespan shutdown (Ray calls it after its own drain of the replica) first drains the app:
      /health/ready answers 503 and work still in flight, WebSocket sessions included, gets
      SHUTDOWN_GRACE_S to finish before the app stops."""

    def __init__(self, app: FastAPI, replica_id: str):
        self.app = app
        self.replica_id = replica_id.encode()

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "lifespan":
            await self.app(scope, self._drain_before_shutdown(receive), self._complete_when_warm(send))
            return

        # Ray's proxy names each request (the client's X-Request-ID, or its own) and adds that
        # X-Request-ID to the response; the app takes the same id for its logs, errors and header.
        proxy_id = dict(scope.get("headers", [])).get(REQUEST_ID_HEADER, b"").decode(errors="replace")
        if _SAFE_REQUEST_ID.fullmatch(proxy_id):
            scope = {**scope, "state": {**scope.get("state", {}), "request_id": proxy_id}}

        async def send_naming_replica(message) -> None:
            if message["type"] in ("http.response.start", "websocket.accept"):
                headers = [(name, value) for name, value in message.get("headers", [])
                           if not (name.lower() == REQUEST_ID_HEADER and value.decode(errors="replace") == proxy_id)]
                message = {**message, "headers": [*headers, (REPLICA_HEADER, self.replica_id)]}
            await send(message)

        await self.app(scope, receive, send_naming_replica)

    def _complete_when_warm(self, send):
        lifecycle = self.app.state.lifecycle

        async def forward(message) -> None:
            if message["type"] == "lifespan.startup.complete":
                while not lifecycle.ready and lifecycle.load_error is None:
                    await asyncio.sleep(0.1)
                if lifecycle.load_error is not None:
                    message = {"type": "lifespan.startup.failed", "message": lifecycle.load_error}
            await send(message)

        return forward

    def _drain_before_shutdown(self, receive):
        lifecycle = self.app.state.lifecycle

        async def forward():
            message = await receive()
            if message["type"] == "lifespan.shutdown":
                lifecycle.begin_drain()
                deadline = time.monotonic() + lifecycle.shutdown_grace_s + 1
                while lifecycle.in_flight and time.monotonic() < deadline:
                    await asyncio.sleep(0.1)
            return message

        return forward


class RayMetricsExport:
    """Copies the app's Prometheus registry (the avatar_* and process_* series its /metrics shows)
    into Ray's metrics every `period_s`, each series tagged with its replica, so that Ray's
    Prometheus export (each node's metrics export port) carries every replica's metrics as
    `ray_<name>{replica="..."}`. Every sample becomes a gauge: counters and histogram buckets keep
    their values, and PromQL's rate() reads them alike."""

    def __init__(self, registry: CollectorRegistry, replica_id: str, period_s: float = 5.0):
        self.registry = registry
        self.replica_id = replica_id
        self.period_s = period_s
        self._gauges: dict[tuple[str, tuple[str, ...]], Gauge] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="ray-metrics-export", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.period_s):
            try:
                self.copy()
            except Exception:  # a scrape gap, never a replica failure
                log.exception("Copying the metrics to Ray failed")

    def copy(self) -> None:
        for family in self.registry.collect():
            for sample in family.samples:
                tags = {**sample.labels, "replica": self.replica_id}
                key = (sample.name, tuple(sorted(tags)))
                gauge = self._gauges.get(key)
                if gauge is None:
                    gauge = self._gauges[key] = Gauge(sample.name, family.documentation, tag_keys=key[1])
                gauge.set(float(sample.value), tags=tags)

    def stop(self) -> None:
        self._stop.set()


@serve.deployment(name="AvatarService")
@serve.ingress()
class AvatarService:
    """One replica: the whole service, its settings read from the replica's environment."""

    def __init__(self) -> None:
        self.settings = load_settings()
        self.replica_id = serve.get_replica_context().replica_tag
        self.service_app: Optional[FastAPI] = None  # `app` is the ingress wrapper's own property
        self.metrics_export: Optional[RayMetricsExport] = None

    def __serve_build_asgi_app__(self) -> ReplicaApp:
        self.service_app = create_app(self.settings)
        self.metrics_export = RayMetricsExport(self.service_app.state.metrics.registry, self.replica_id)
        return ReplicaApp(self.service_app, self.replica_id)

    def __del__(self) -> None:
        if self.metrics_export is not None:
            self.metrics_export.stop()

    def check_health(self) -> None:
        """Ray's periodic health check: a replica whose models failed to load is replaced."""
        lifecycle = self.service_app.state.lifecycle if self.service_app is not None else None
        if lifecycle is not None and lifecycle.load_error:
            raise RuntimeError(f"the models failed to load: {lifecycle.load_error}")


# What `serve run serve_config.yaml` imports; the config file supplies the deployment's options.
app = AvatarService.bind()


def serve_config(config_path: Path = DEFAULT_CONFIG, *, host: Optional[str] = None, port: Optional[int] = None,
                 replicas: Optional[int] = None, gpus_per_replica: Optional[float] = None,
                 cpus_per_replica: Optional[float] = None,
                 env: Optional[dict[str, str]] = None, **deployment_overrides: Any) -> dict:
    """The Serve config file as a dict, with the proxy on host:port (default: the file's) and
    overrides: `replicas` fixes the count (no autoscaling); `gpus_per_replica` 0 places replicas
    by `cpus_per_replica` alone (a machine without GPUs); `env` adds environment variables of the
    replicas; any other keyword sets that deployment option (`max_ongoing_requests=2`)."""
    unknown = set(deployment_overrides) - set(DeploymentSchema.model_fields)
    if unknown:  # Ray's schema would ignore them silently
        raise ValueError(f"not Ray Serve deployment options: {sorted(unknown)}")
    config = yaml.safe_load(config_path.read_text())
    proxy = config.setdefault("http_options", {})
    proxy.update({key: value for key, value in (("host", host), ("port", port)) if value is not None})
    application = config["applications"][0]
    deployment = _avatar_deployment(config)
    deployment.update(deployment_overrides)
    actor = deployment.setdefault("ray_actor_options", {})
    if replicas is not None:  # a fixed count wins over autoscaling, the file's or an override's
        deployment.pop("autoscaling_config", None)
        deployment["num_replicas"] = replicas
    if gpus_per_replica is not None:
        if gpus_per_replica > 0:
            actor["num_gpus"] = gpus_per_replica
        else:
            actor.pop("num_gpus", None)
    if cpus_per_replica is not None:
        actor["num_cpus"] = cpus_per_replica
    runtime_env = application.setdefault("runtime_env", {})
    # Replicas log the address clients use: the proxy's.
    runtime_env["env_vars"] = {**(runtime_env.get("env_vars") or {}), "HOST": proxy.get("host", "127.0.0.1"),
                               "PORT": str(proxy.get("port", 8000)), **(env or {})}
    return config


def deploy(config_path: Path = DEFAULT_CONFIG, *, wait_s: float = 600.0, **overrides: Any) -> str:
    """Deploy the Serve config (with `serve_config`'s overrides) on the connected Ray cluster, as
    `serve deploy` would, and wait until every replica is warm; returns the base URL. Deploying
    again with another replica count scales in place: the application's code version is its
    import path and runtime_env, as for `serve deploy`."""
    from ray.serve._private.api import serve_start  # what `serve run CONFIG` itself calls

    config = ServeDeploySchema.model_validate(serve_config(config_path, **overrides))
    client = serve_start(http_options=config.http_options.model_dump(), proxy_location=config.proxy_location)
    client.deploy_apps(config)
    wait_until_running(config.applications[0].name, wait_s)
    host = config.http_options.host
    return f"http://{'127.0.0.1' if host in ('0.0.0.0', '::') else host}:{config.http_options.port}"


def wait_until_running(app_name: str, wait_s: float) -> None:
    """Until Serve reports the application RUNNING (every replica constructed, so warm)."""
    deadline = time.monotonic() + wait_s
    while True:
        status = serve.status().applications.get(app_name)
        if status is not None and status.status == "RUNNING":
            return
        if status is not None and status.status in ("DEPLOY_FAILED", "UNHEALTHY"):
            raise RuntimeError(f"Ray Serve application {app_name} is {status.status}: {status.message}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"Ray Serve application {app_name} not running after {wait_s:.0f} s: {status}")
        time.sleep(0.5)


def start_local_cluster(num_cpus: int, num_gpus: Optional[int] = None, object_store_mb: int = 256,
                        log_to_driver: bool = True, metrics_export_port: Optional[int] = None) -> None:
    """A Ray cluster in this process's session: no dashboard, a small object store (requests and
    mp4s pass through it only in pieces of a few MB). `log_to_driver`: replicas' logs on this
    process's stderr (always in Ray's session logs, /tmp/ray/session_latest/logs).
    `metrics_export_port`: where Prometheus scrapes Ray's metrics, the replicas' included."""
    ray.init(num_cpus=num_cpus, num_gpus=num_gpus, include_dashboard=False,
             object_store_memory=object_store_mb * 1024 * 1024, logging_level=logging.WARNING,
             configure_logging=False, namespace="avatar", log_to_driver=log_to_driver,
             _metrics_export_port=metrics_export_port)


def fit_local_cluster(config_path: Path, gpus_per_replica: Optional[float],
                      cpus_per_replica: Optional[float]) -> dict[str, Any]:
    """Overrides that make the config fit the local cluster: replicas on CPUs when it has no GPU,
    and autoscaling up to as many replicas as its resources hold (more would wait forever)."""
    deployment = _avatar_deployment(yaml.safe_load(config_path.read_text()))
    actor = deployment.get("ray_actor_options", {})
    resources = ray.cluster_resources()
    if gpus_per_replica is None and actor.get("num_gpus") and not resources.get("GPU"):
        log.info("No GPU in the local Ray cluster: replicas run on CPUs")
        gpus_per_replica = 0
    gpus = actor.get("num_gpus", 0) if gpus_per_replica is None else gpus_per_replica
    cpus = min(actor.get("num_cpus", 1) if cpus_per_replica is None else cpus_per_replica, resources["CPU"])
    holds = int(resources["CPU"] // cpus) if cpus else 1_000
    if gpus:
        holds = min(holds, int(resources.get("GPU", 0) // gpus))
    overrides: dict[str, Any] = {"gpus_per_replica": gpus, "cpus_per_replica": cpus}
    scaling = deployment.get("autoscaling_config")
    if scaling and scaling.get("max_replicas", 1) > holds:
        overrides["autoscaling_config"] = {**scaling, "max_replicas": max(1, holds),
                                           "min_replicas": min(scaling.get("min_replicas", 1), max(1, holds))}
    return overrides


def _avatar_deployment(config: dict) -> dict:
    return next(d for d in config["applications"][0]["deployments"] if d["name"] == AvatarService.name)


def main() -> None:
    parser = argparse.ArgumentParser(description="Serve the avatar service on Ray Serve (HOST:PORT from the settings)")
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG,
                        help="Serve config file (default serve_config.yaml)")
    parser.add_argument("--address", help="an existing Ray cluster (default: RAY_ADDRESS, else a local one)")
    parser.add_argument("--replicas", type=int, help="a fixed replica count instead of the config's autoscaling")
    parser.add_argument("--gpus-per-replica", type=float, help="0: replicas on CPUs (default: the config's)")
    parser.add_argument("--cpus-per-replica", type=float, help="default: the config's")
    parser.add_argument("--num-cpus", type=int, help="CPUs the local cluster offers (default: all)")
    parser.add_argument("--metrics-export-port", type=int, default=8080,
                        help="Ray's Prometheus export of the local cluster, every replica's metrics included")
    args = parser.parse_args()
    settings: Settings = load_settings()
    configure_logging(settings.log_level, settings.log_format)

    address = args.address or os.environ.get("RAY_ADDRESS")
    if address:  # as `serve deploy`: the proxy where the config puts it; the deployment stays
        ray.init(address=address, namespace="avatar", logging_level=logging.WARNING)
        url = deploy(args.config, replicas=args.replicas, gpus_per_replica=args.gpus_per_replica,
                     cpus_per_replica=args.cpus_per_replica)
        log.info("Deployed on the Ray cluster at %s: %s", address, url)
        return
    start_local_cluster(args.num_cpus or os.cpu_count() or 1, metrics_export_port=args.metrics_export_port)
    overrides = fit_local_cluster(args.config, args.gpus_per_replica, args.cpus_per_replica)
    # SIGTERM (docker stop, kill) ends the wait below as Ctrl-C does; the cluster goes in `finally`.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        url = deploy(args.config, host=settings.host, port=settings.port, replicas=args.replicas, **overrides)
        log.info("Ready: %s (Ray Serve; Ctrl-C stops it)", url)
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        log.info("Stopping the local Ray cluster")
        serve.shutdown()
        ray.shutdown()


if __name__ == "__main__":
    main()
