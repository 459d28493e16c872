"""The Azure inference endpoint: a Container App running `aitk serve` on the project's exported model.

    provision_app   create the app if it is missing (external ingress on 8000, HTTP probes on /health,
                    the Azure Files share at /mount, Consumption (CPU) or the GPU workload profile)
    deploy          upload the exported model folder + aitk.toml (only files the share lacks), then
                    update the app so a new revision serves that deploy folder; wait for it; write
                    infra/inference.config.json (AI Toolkit's keys + ours)
    endpoint        read that file back, with the app's live FQDN and revision
    stream_app_logs the app's console log, as `az containerapp logs show --follow` reads it

Layout on the share: deploys/<id>/manifest.json, contents in the same content-addressed objects/ as
runs (files.py), so a redeploy with a new adapter uploads only the adapter. The container lays the
deploy out locally (entry.py --layout, hash-checked) and runs
`aitk serve --project <that folder> --host 0.0.0.0 --port 8000`.

The API key is a Container Apps secret `api-key`, exposed as $AITK_API_KEY via secretRef: it goes
only into the request body that sets it; never into a file, a log line or an error message.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from ...core.errors import AitkError
from . import config
from .clients import AzureContext
from .config import InfraConfig
from .errors import azure_call
from ...core.digest import file_sha256
from .files import ShareFiles
from .logs import LOG_STREAM_API, parse_stream_line, query_logs
from .provision import VOLUME, Step

PORT = 8000
CONTAINER = "server"
API_KEY_SECRET = "api-key"
API_KEY_ENV = "AITK_API_KEY"
DEPLOYS = "deploys"
CPU_PROFILE = "Consumption"
CPU_RESOURCES = (2.0, "4Gi")
INFERENCE_FILE = Path("infra") / "inference.config.json"
AITK_INFERENCE_KEYS = ("SUBSCRIPTION_ID", "RESOURCE_GROUP_NAME", "STORAGE_ACCOUNT_NAME", "FILE_SHARE_NAME",
                       "ACA_APP_NAME", "ACA_APP_ENDPOINT")
ADAPTERS = ("tuned", "base")


def app_name(cfg: InfraConfig) -> str:
    return f"aitk-inf-{config.name_suffix(cfg.subscription_id, cfg.resource_group)}"


def inference_path(project_root: Path) -> Path:
    return Path(project_root) / INFERENCE_FILE


def serve_command(deploy_dir: str | None, bundle_dir: str) -> list[str]:
    """The entry script on the share installs aitk's bundle on the image's Python, lays the deploy
    out (none yet: the built-in tiny model answers) and execs `aitk serve`: no image of our own."""
    return ["/bin/bash", "-c", f"exec python3 {config.ENTRY} --serve {deploy_dir or '-'} {bundle_dir} {PORT}"]


def upload_bundle(ctx: AzureContext, cfg: InfraConfig) -> str:
    from . import bundle
    from .run import share_files

    with azure_call(f"upload aitk's bundle to share {cfg.file_share}", scope=f"storage account {cfg.storage_account}"):
        return bundle.upload(share_files(ctx, cfg), bundle.build())


def _probe(kind: str, delay: int, period: int, failures: int) -> dict:
    return {"type": kind, "httpGet": {"path": "/health", "port": PORT, "scheme": "HTTP"},
            "initialDelaySeconds": delay, "periodSeconds": period, "failureThreshold": failures, "timeoutSeconds": 5}


def container(cfg: InfraConfig, *, gpu: bool, deploy_dir: str | None, adapter: str, with_key: bool,
              bundle_dir: str) -> dict:
    cpu, memory = (config.gpu(cfg.gpu).cpu, config.gpu(cfg.gpu).memory) if gpu else CPU_RESOURCES
    env = [{"name": "AITK_MOUNT", "value": config.MOUNT}, {"name": "AITK_DEPLOY", "value": deploy_dir or ""},
           {"name": "AITK_ADAPTER", "value": adapter}]
    if with_key:
        env.append({"name": API_KEY_ENV, "secretRef": API_KEY_SECRET})
    return {"name": CONTAINER, "image": cfg.image, "command": serve_command(deploy_dir, bundle_dir), "env": env,
            "resources": {"cpu": cpu, "memory": memory},
            "probes": [_probe("Startup", 5, 10, 60), _probe("Liveness", 0, 30, 3), _probe("Readiness", 0, 10, 3)],
            "volumeMounts": [{"volumeName": VOLUME, "mountPath": config.MOUNT}]}


def app_body(cfg: InfraConfig, env_id: str, *, gpu: bool, api_key: str | None, bundle_dir: str,
             deploy_dir: str | None = None, adapter: str = "tuned", registry_password: str | None = None) -> dict:
    conf = {"activeRevisionsMode": "Single",
            "ingress": {"external": True, "targetPort": PORT, "transport": "auto", "allowInsecure": False,
                        "traffic": [{"latestRevision": True, "weight": 100}]}}
    secrets = [{"name": API_KEY_SECRET, "value": api_key}] if api_key else []
    if registry_password:
        secrets.append({"name": config.REGISTRY_PASSWORD_SECRET, "value": registry_password})
    if secrets:
        conf["secrets"] = secrets
    if cfg.registries():
        conf["registries"] = cfg.registries()
    body = {"location": cfg.location, "tags": {"created-by": "aitk"}, "properties": {
        "environmentId": env_id,
        "workloadProfileName": cfg.profile_name if gpu else CPU_PROFILE,
        "configuration": conf,
        "template": {"containers": [container(cfg, gpu=gpu, deploy_dir=deploy_dir, adapter=adapter,
                                              with_key=bool(api_key), bundle_dir=bundle_dir)],
                     "scale": {"minReplicas": 1, "maxReplicas": 1},
                     "volumes": [{"name": VOLUME, "storageType": "AzureFile",
                                  "storageName": cfg.environment_storage}]}}}
    if cfg.identity():
        body["identity"] = cfg.identity()
    return body


def _scope(cfg: InfraConfig) -> dict:
    return {"scope": f"resource group {cfg.resource_group} (subscription {cfg.subscription_id})",
            "gpu_label": config.gpu(cfg.gpu).quota_label, "location": cfg.location,
            "subscription": cfg.subscription_id}


def get_app(ctx: AzureContext, cfg: InfraConfig, name: str | None = None):
    from azure.core.exceptions import ResourceNotFoundError

    name = name or app_name(cfg)
    with azure_call(f"read Container App {name}", **_scope(cfg)):
        try:
            return ctx.apps.container_apps.get(cfg.resource_group, name)
        except ResourceNotFoundError:
            return None


def provision_app(ctx: AzureContext, cfg: InfraConfig, *, gpu: bool = False, api_key: str | None = None,
                  name: str | None = None, progress: Callable[[str], None] | None = None,
                  registry_password: str | None = None) -> tuple[object, Step]:
    """Create the inference app if it is missing (needs `aitk azure provision` first); else change nothing."""
    name = name or app_name(cfg)
    app = get_app(ctx, cfg, name)
    if app is not None:
        step = Step("Container App", name, "exists", f"https://{fqdn_of(app)}" if fqdn_of(app) else "")
    else:
        from azure.core.exceptions import ResourceNotFoundError

        with azure_call(f"read Container Apps environment {cfg.environment}", **_scope(cfg)):
            try:
                env = ctx.apps.managed_environments.get(cfg.resource_group, cfg.environment)
            except ResourceNotFoundError:
                raise AitkError(f"environment {cfg.environment} does not exist",
                                "run `aitk azure provision` first") from None
        bundle_dir = upload_bundle(ctx, cfg)
        body = app_body(cfg, env.id, gpu=gpu, api_key=api_key, bundle_dir=bundle_dir,
                        registry_password=registry_password)
        with azure_call(f"create Container App {name}", **_scope(cfg)):
            app = ctx.apps.container_apps.begin_create_or_update(cfg.resource_group, name, body).result()
        step = Step("Container App", name, "created",
                    f"{'GPU ' + cfg.profile_name if gpu else 'CPU (Consumption)'}, port {PORT}")
    if progress:
        progress(step.line())
    return app, step


def fqdn_of(app) -> str | None:
    p = getattr(app, "properties", None)
    ing = getattr(getattr(p, "configuration", None), "ingress", None)
    return getattr(ing, "fqdn", None) or getattr(p, "latest_revision_fqdn", None)


# -- deploy -------------------------------------------------------------------------------------
def deploy_manifest(project) -> dict:
    """aitk.toml + the exported model folder (with both adapters), paths relative to the project."""
    root = Path(project.root)
    onnx = Path(project.onnx_dir())
    if not onnx.is_dir():
        raise AitkError(f"no exported model in {onnx}", "run `aitk export` first (after a fine-tune)")
    # The zero `base` adapter and at least one fine-tuned one (named by core/adapters.py; `tuned`
    # answers with the active one, so AITK_ADAPTER=tuned needs no file of that name).
    tuned = [p for p in (onnx / "adapters").glob("*.onnx_adapter") if p.stem != "base"]
    missing = [a for a in ADAPTERS if not (onnx / "adapters" / f"{a}.onnx_adapter").is_file()
               and not (a == "tuned" and tuned)]
    if missing:
        raise AitkError(f"{onnx}/adapters lacks {', '.join(m + '.onnx_adapter' for m in missing)}",
                        "rerun `aitk export` so the tuned and base adapters are both there")
    files = {}
    paths = [root / "aitk.toml"] + sorted(p for p in onnx.rglob("*") if p.is_file() and not p.name.startswith("."))
    for p in paths:
        files[p.relative_to(root).as_posix()] = {"sha256": file_sha256(p), "size": p.stat().st_size}
    return {"version": 1, "created": time.time(), "files": files}


def upload_deploy(share: ShareFiles, project, deploy_dir: str, progress: Callable[[str], None] | None = None):
    manifest = deploy_manifest(project)
    stats = share.upload_manifest(Path(project.root), manifest, deploy_dir)
    if progress:
        progress("uploaded: " + stats.line())
    return manifest, stats


def new_deploy_id() -> str:
    """Also the revision suffix: lowercase letters, digits, '-'; sorts by time."""
    return "d" + dt.datetime.now(dt.timezone.utc).strftime("%y%m%d-%H%M%S") + "-" + uuid.uuid4().hex[:4]


def deploy(ctx: AzureContext, project, cfg: InfraConfig, *, adapter: str = "tuned", gpu: bool = False,
           api_key: str | None = None, progress: Callable[[str], None] | None = None) -> dict:
    """Upload, roll a new revision onto the deploy folder, wait for it; returns (and writes) the config."""
    from .run import share_files

    say = progress or (lambda _: None)
    if adapter not in ADAPTERS:
        raise AitkError(f"unknown adapter {adapter!r}", f"choose one of: {', '.join(ADAPTERS)}")
    deploy_manifest(project)  # fail before anything is created or uploaded
    name = existing_app_name(project.root, cfg) or app_name(cfg)
    app, _ = provision_app(ctx, cfg, gpu=gpu, api_key=api_key, name=name, progress=say)
    deploy_id = new_deploy_id()
    deploy_dir = f"{DEPLOYS}/{deploy_id}"
    bundle_dir = upload_bundle(ctx, cfg)
    with azure_call(f"upload the model to share {cfg.file_share}", scope=f"storage account {cfg.storage_account}"):
        _, stats = upload_deploy(share_files(ctx, cfg), project, deploy_dir, say)
    secrets = [s.name for s in (app.properties.configuration.secrets or [])] \
        if app.properties and app.properties.configuration else []
    with_key = bool(api_key) or API_KEY_SECRET in secrets
    patch = {"properties": {
        "workloadProfileName": cfg.profile_name if gpu else CPU_PROFILE,
        "template": {"revisionSuffix": deploy_id,
                     "containers": [container(cfg, gpu=gpu, deploy_dir=deploy_dir, adapter=adapter,
                                              with_key=with_key, bundle_dir=bundle_dir)]}}}
    conf = {}
    ingress = app.properties.configuration.ingress if app.properties and app.properties.configuration else None
    if ingress is not None and ingress.target_port != PORT:  # an adopted app (AI Toolkit's Gradio: 7860)
        conf["ingress"] = {"targetPort": PORT}
    if api_key:  # otherwise `secrets` is left out: Azure keeps the stored ones (values never read back)
        conf["secrets"] = [{"name": API_KEY_SECRET, "value": api_key}]
    if conf:
        patch["properties"]["configuration"] = conf
    say(f"rolling out revision {name}--{deploy_id}")
    with azure_call(f"update Container App {name}", **_scope(cfg)):
        app = ctx.apps.container_apps.begin_update(cfg.resource_group, name, patch).result()
    app = get_app(ctx, cfg, name) or app
    fqdn = fqdn_of(app)
    if not fqdn:
        raise AitkError(f"Container App {name} has no ingress FQDN", "check its ingress in the Azure portal")
    revision = app.properties.latest_revision_name
    data = {
        "SUBSCRIPTION_ID": cfg.subscription_id, "RESOURCE_GROUP_NAME": cfg.resource_group,
        "STORAGE_ACCOUNT_NAME": cfg.storage_account, "FILE_SHARE_NAME": cfg.file_share,
        "ACA_APP_NAME": name, "ACA_APP_ENDPOINT": f"https://{fqdn}",
        "LOCATION": cfg.location, "ACA_ENVIRONMENT_NAME": cfg.environment, "ACA_REVISION": revision,
        "DEPLOY_FOLDER": deploy_dir, "ADAPTER": adapter, "IMAGE": cfg.image,
        "WORKLOAD_PROFILE": cfg.profile_name if gpu else CPU_PROFILE,
        "API_KEY_SECRET": API_KEY_SECRET if with_key else None, "API_KEY_ENV": API_KEY_ENV if with_key else None,
        "OPENAI_BASE_URL": f"https://{fqdn}/v1", "DEPLOYED_AT": dt.datetime.now(dt.timezone.utc).isoformat(),
        "UPLOADED_FILES": stats.uploaded, "REUSED_FILES": stats.reused,
    }
    path = save_inference(project.root, data)
    say(f"wrote {path}")
    return data


def save_inference(project_root: Path, data: dict) -> Path:
    p = inference_path(project_root)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, p)
    return p


def load_inference(project_root: Path) -> dict:
    p = inference_path(project_root)
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise AitkError(f"{p} does not exist: nothing deployed yet", "run `aitk azure deploy`") from None
    except ValueError as e:
        raise AitkError(f"{p} is not valid JSON: {e}", "rerun `aitk azure deploy`") from None
    if not data.get("ACA_APP_NAME"):
        raise AitkError(f"{p} has no ACA_APP_NAME yet", "run `aitk azure deploy`")
    return normalize_endpoint(data)


def normalize_endpoint(data: dict) -> dict:
    """AI Toolkit writes ACA_APP_ENDPOINT as a bare FQDN: give it the scheme (and the OpenAI base URL)."""
    ep = (data.get("ACA_APP_ENDPOINT") or "").strip().rstrip("/")
    if ep and "://" not in ep:
        ep = "https://" + ep
    if ep:
        data = {**data, "ACA_APP_ENDPOINT": ep}
        data.setdefault("OPENAI_BASE_URL", ep + "/v1")
    return data


def existing_app_name(project_root: Path, cfg: InfraConfig) -> str | None:
    """The app a project's inference file names in the same group (AI Toolkit's, or ours): reused."""
    try:
        data = json.loads(inference_path(project_root).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    same = data.get("RESOURCE_GROUP_NAME") in (None, cfg.resource_group) and \
        data.get("SUBSCRIPTION_ID") in (None, cfg.subscription_id)
    return data.get("ACA_APP_NAME") if same and data.get("ACA_APP_NAME") else None


def endpoint(ctx: AzureContext | None, project_root: Path, cfg: InfraConfig | None = None) -> dict:
    """The deployed endpoint; with a context, checked against the live app (FQDN, revision, state)."""
    data = load_inference(project_root)
    if ctx is None:
        return data
    cfg = cfg or config.load_infra(project_root)
    app = get_app(ctx, cfg, data["ACA_APP_NAME"])
    if app is None:
        raise AitkError(f"Container App {data['ACA_APP_NAME']} no longer exists", "run `aitk azure deploy` again")
    p = app.properties
    fqdn = fqdn_of(app)
    live = {"ACA_APP_ENDPOINT": f"https://{fqdn}" if fqdn else None, "ACA_REVISION": p.latest_revision_name,
            "READY_REVISION": p.latest_ready_revision_name,
            "PROVISIONING_STATE": str(getattr(p.provisioning_state, "value", p.provisioning_state))}
    if live["ACA_APP_ENDPOINT"] and live["ACA_APP_ENDPOINT"] != data.get("ACA_APP_ENDPOINT"):
        data = {**data, "ACA_APP_ENDPOINT": live["ACA_APP_ENDPOINT"], "OPENAI_BASE_URL": live["ACA_APP_ENDPOINT"] + "/v1"}
        save_inference(project_root, data)
    return {**data, "live": live}


# -- logs ---------------------------------------------------------------------------------------
def _app_path(cfg: InfraConfig, name: str) -> str:
    return f"/subscriptions/{cfg.subscription_id}/resourceGroups/{cfg.resource_group}/providers/Microsoft.App/containerApps/{name}"


def stream_app_logs(ctx: AzureContext, cfg: InfraConfig, name: str, on_line: Callable[[str], None], *,
                    follow: bool = False, tail: int = 100, stop: threading.Event | None = None,
                    revision: str | None = None, reconnects: int = 5) -> int:
    """Print the app's console log (the latest revision's first replica); returns lines delivered.

    Like the job log stream: getAuthToken, the revision's replicas, then the event stream endpoint.
    No replica running (scaled to zero, or not started yet): the lines come from Log Analytics.
    """
    import requests
    import urllib3

    stop = stop or threading.Event()
    app = get_app(ctx, cfg, name)
    if app is None:
        raise AitkError(f"Container App {name} does not exist", "run `aitk azure deploy`")
    rev = revision or app.properties.latest_ready_revision_name or app.properties.latest_revision_name
    base = app.properties.event_stream_endpoint
    base = base[: base.index("/subscriptions/")]
    delivered, last_key, delay, drops, connected = 0, None, 0.5, 0, False

    def handle(raw: bytes) -> None:
        nonlocal delivered, last_key
        key, text, system = parse_stream_line(raw.decode("utf-8", "replace"))
        if system or (key is not None and last_key is not None and key <= last_key):
            return  # a system line, or a replay after a reconnect
        last_key = key or last_key
        on_line(text)
        delivered += 1

    while not stop.is_set():
        with azure_call(f"read the replicas of revision {rev}", **_scope(cfg)):
            reps = ctx.arm_request("GET", _app_path(cfg, name) + f"/revisions/{rev}/replicas", LOG_STREAM_API)
        reps = [r for r in reps.get("value") or [] if (r.get("properties") or {}).get("containers")]
        if not reps:
            if connected:  # the replica went away (scaled in, new revision): its log is over
                return delivered
            if cfg.workspace_id:
                with azure_call(f"query Log Analytics for app {name}"):
                    rows = query_logs(ctx, cfg.workspace_id, rev)[-tail:]
                for _, text in rows:
                    on_line(text)
                return len(rows)
            raise AitkError(f"revision {rev} has no running replica", "wait for it to start, then retry")
        rep = reps[0]
        cname = next((c["name"] for c in rep["properties"]["containers"] if c["name"] == CONTAINER),
                     rep["properties"]["containers"][0]["name"])
        with azure_call(f"get a log stream token for app {name}", **_scope(cfg)):
            token = ctx.arm_request("POST", _app_path(cfg, name) + "/getAuthToken", LOG_STREAM_API)["properties"]["token"]
        url = (f"{base}/subscriptions/{cfg.subscription_id}/resourceGroups/{cfg.resource_group}/containerApps/"
               f"{name}/revisions/{rev}/replicas/{rep['name']}/containers/{cname}/logstream")
        try:
            resp = requests.get(url, params={"follow": "true" if follow else "false", "output": "text",
                                             "tailLines": tail}, headers={"Authorization": f"Bearer {token}"},
                                stream=True, timeout=(15, 300), verify=ctx.endpoints.verify)
            if resp.status_code == 404 and connected:
                resp.close()
                return delivered
            if resp.status_code >= 400:
                status, text = resp.status_code, resp.text[:200]
                resp.close()
                raise AitkError(f"the log stream of app {name} answered HTTP {status}: {text}",
                                "retry; or read the lines in Log Analytics (ContainerAppConsoleLogs_CL)")
            connected = True
            buf, raw = b"", resp.raw
            try:
                while not stop.is_set():
                    chunk = raw.read1(65536) if hasattr(raw, "read1") else raw.read(4096)
                    if not chunk:
                        break
                    buf += chunk
                    *complete, buf = buf.split(b"\n")
                    for line in complete:
                        handle(line)
            finally:
                resp.close()
            if buf.strip():
                handle(buf)
            if not follow:
                return delivered
            drops, delay = 0, 0.5  # a clean end while following (idle timeout): reconnect, replays are dropped
        except (requests.RequestException, urllib3.exceptions.HTTPError, OSError) as e:  # any drop: reconnect
            drops += 1
            if not follow or drops > reconnects:
                raise AitkError(f"the log stream of app {name} dropped: {type(e).__name__}",
                                "check the network, then retry") from None
            stop.wait(delay)
            delay = min(delay * 2, 10)
    return delivered
