"""`aitk azure ...`: sign in, provision, secrets, and remote fine-tunes that queue like local ones.

    aitk azure login [--device-code] [--remember] [--subscription ID] [--resource-group RG] [--location L]
    aitk azure whoami [--list]
    aitk azure provision [--gpu a100|t4] [--dry-run] ...
    aitk azure secret set hf-token            (value from a hidden prompt, stdin, or --from-env VAR)
    aitk azure run [-d]                        (upload, start, follow: like `aitk finetune`)
    aitk azure logs|stop|status [JOB]         (= `aitk jobs logs|cancel|show`, the latest Azure job by default)
    aitk azure fetch [JOB]
    aitk azure deploy [--gpu] [--api-key-secret]  (the exported model behind an HTTPS endpoint)
    aitk azure endpoint                        (its URL, revision and state)
    aitk azure app-logs [-f]                   (the inference app's console log)

Errors are AitkErrors (one line + hint, exit 2), as everywhere in the CLI.
"""

from __future__ import annotations

import argparse
import datetime as dt
import getpass
import json
import os
import sys

from ..core.errors import AitkError


def _err(text: str) -> None:
    print(f"  {text}", file=sys.stderr, flush=True)


def _store():
    from ..core.jobs import JobStore

    return JobStore()


def _project(args):
    from ..core.project import find_project

    return find_project(getattr(args, "project", None))


def _azure_job(store, job_id: str | None):
    """The named job, or the latest Azure job."""
    if job_id:
        rec = store.get(job_id)
        if rec.provider != "azure":
            raise AitkError(f"job {rec.id} ran {rec.provider}ly, not on Azure", "use `aitk jobs ...` for it")
        return rec
    recs = [r for r in store.list(limit=200) if r.provider == "azure"]
    if not recs:
        raise AitkError("no Azure jobs yet", "start one with `aitk azure run`")
    return recs[0]


def _prompt(verification_uri: str, user_code: str, expires_on) -> None:
    when = expires_on.astimezone().strftime("%H:%M") if isinstance(expires_on, dt.datetime) else "soon"
    print(f"To sign in, open {verification_uri} on any device and enter the code {user_code} "
          f"(valid until {when}). Waiting...", flush=True)


# -- sign-in ------------------------------------------------------------------------------------
def cmd_login_check() -> int:
    from ..providers.azure import auth

    rows = auth.check_sources()
    width = max(len(n) for n, _, _ in rows)
    for name, state, detail in rows:
        print(f"{name:<{width}}  {state:<11}  {detail}")
    who = next(((n, d) for n, s, d in rows if s == "answered"), None)
    if who:
        print(f"signed in through {who[0]}: {who[1]}")
        return 0
    print("no silent sign-in answered: `aitk azure login` signs in with a device code")
    return 1


def cmd_login(args) -> int:
    from ..providers.azure import auth, config
    from ..providers.azure.clients import AzureContext

    if args.check:
        return cmd_login_check()
    ident = auth.login(device_code=args.device_code, prompt=_prompt, remember=args.remember,
                       allow_unencrypted=args.allow_unencrypted, tenant=args.tenant)
    print(f"signed in as {ident.display} (tenant {ident.tenant_id}) via {ident.source}")
    ctx = AzureContext(auth.credential(), None)
    sub = auth.resolve_subscription(args.subscription, ctx)
    from ..providers.azure.errors import azure_call

    with azure_call("list your Azure subscriptions"):
        subs = {s["subscriptionId"]: s for s in ctx.list_subscriptions()}
    if sub not in subs:
        raise AitkError(f"subscription {sub} is not visible to {ident.display}",
                        "choose one of: " + ", ".join(f"{k} ({v.get('displayName', '')})" for k, v in subs.items()))
    saved = config.update_settings(subscription_id=sub, resource_group=args.resource_group,
                                   location=args.location.lower() if args.location else None)
    print(f"subscription {sub} ({subs[sub].get('displayName', '')})"
          + (f", resource group {saved['resource_group']}" if saved.get("resource_group") else "")
          + (f", location {saved['location']}" if saved.get("location") else ""))
    if args.remember:
        print("the sign-in is remembered (token cache persisted with your consent); `aitk azure logout` forgets it")
    return 0


def cmd_logout(args) -> int:
    from ..providers.azure import auth

    done = auth.logout()
    print("forgot " + ", ".join(done) if done else "nothing remembered; nothing to forget")
    return 0


def cmd_whoami(args) -> int:
    from ..providers.azure import auth, config
    from ..providers.azure.clients import AzureContext
    from ..providers.azure.errors import azure_call

    cred = auth.credential()
    ident = auth.identity(cred)
    settings = config.load_settings()
    print(f"{ident.display}  tenant {ident.tenant_id}  via {ident.source}")
    try:
        sub = auth.resolve_subscription(None)
    except AitkError:
        sub = None
    print(f"subscription   {sub or '(none chosen)'}")
    print(f"resource group {settings.get('resource_group') or '(none chosen)'}")
    print(f"location       {settings.get('location') or '(none chosen)'}")
    print(f"Azure log      {auth.log_file()}")
    if args.list:
        with azure_call("list your Azure subscriptions"):
            for s in AzureContext(cred, sub).list_subscriptions():
                mark = "*" if s["subscriptionId"] == sub else " "
                print(f" {mark} {s['subscriptionId']}  {s.get('displayName', '')}  ({s.get('state', '')})")
    return 0


# -- provisioning -------------------------------------------------------------------------------
def cmd_provision(args) -> int:
    from ..providers.azure import auth, config
    from ..providers.azure.clients import AzureContext
    from ..providers.azure.provision import plan_config, provision

    project = _project(args)
    existing = config.load_infra(project.root, required=False)
    settings = config.load_settings()
    cred = auth.credential()
    sub = args.subscription or (existing.subscription_id if existing else None) or auth.resolve_subscription(
        None, AzureContext(cred, None))
    rg = args.resource_group or (existing.resource_group if existing else None) or settings.get("resource_group") \
        or f"aitk-{project.name.lower()}"
    location = args.location or (existing.location if existing else None) or settings.get("location")
    cfg = plan_config(subscription_id=sub, resource_group=rg, location=location, gpu=args.gpu, image=args.image,
                      timeout_s=args.timeout, existing=existing, storage_account=args.storage_account, job=args.job,
                      registry_server=args.registry_server, registry_username=args.registry_username,
                      registry_identity=args.registry_identity)
    password = None
    if cfg.registry_server and cfg.registry_username and not cfg.registry_identity and not args.dry_run:
        password = os.environ.get(args.registry_password_env) if args.registry_password_env else \
            getpass.getpass(f"password for {cfg.registry_username} at {cfg.registry_server} (hidden): ")
        if not password:
            raise AitkError("no registry password given", "set it in the variable named by --registry-password-env, "
                            "or type it when asked; or use --registry-identity for ACR")
    ctx = AzureContext(cred, sub, notify=_err)
    print(("planning" if args.dry_run else "provisioning") + f" in subscription {sub}, resource group {rg}, "
          f"{cfg.location or '?'}, GPU {config.gpu(cfg.gpu).profile_type}")
    cfg, steps, warnings = provision(ctx, project.root, cfg, dry_run=args.dry_run, progress=lambda s: print("  " + s),
                                     registry_password=password)
    for w in warnings:
        print(f"warning: {w}")
    created = sum(s.state == "created" for s in steps)
    if args.dry_run:
        print(f"dry run: {sum(s.state == 'would create' for s in steps)} resources would be created; nothing changed")
    else:
        print(f"done: {created} created, {len(steps) - created} already there; names in {config.infra_path(project.root)}")
        if created:
            print("next: `aitk azure secret set hf-token` (for gated models), then `aitk azure run`")
    return 0


def cmd_quota(args) -> int:
    from ..providers.azure import auth, config, quota
    from ..providers.azure.clients import AzureContext

    project = _project(args)
    cfg = config.load_infra(project.root, required=False)
    settings = config.load_settings()
    if cfg is None:
        sub = args.subscription or auth.resolve_subscription(None, AzureContext(auth.credential(), None))
        location = args.location or settings.get("location")
        if not location:
            raise AitkError("no Azure region chosen", "pass --location (e.g. westus3, swedencentral, australiaeast)")
        cfg = config.InfraConfig(subscription_id=sub, resource_group="-", location=location, storage_account="-",
                                 file_share="-", job="-", environment="-", environment_storage="-", workspace="-")
    if args.location:
        cfg.location = args.location
    if args.gpu:
        cfg.gpu = args.gpu
    rep = quota.report(AzureContext(auth.credential(), cfg.subscription_id, notify=_err), cfg)
    for line in rep.lines():
        print(line)
    for key, q in rep.other.items():
        print(f"serverless {q.line()}")
    try:
        quota.check(AzureContext(auth.credential(), cfg.subscription_id, notify=_err), cfg, strict=False,
                    dedicated_profile=bool(cfg.workload_profile))
        print(f"ok: a {rep.gpu.key.upper()} run can start in {cfg.location}")
    except AitkError as e:
        print(f"blocked: {e}")
        print(f"next: {e.hint}")
        return 1
    return 0


def cmd_secret_set(args) -> int:
    from ..providers.azure import config
    from ..providers.azure.run import context
    from ..providers.azure.secret import check_name, set_secret

    check_name(args.name)
    if args.from_env:
        value = os.environ.get(args.from_env)
        if not value:
            raise AitkError(f"environment variable {args.from_env} is empty or unset", "export it first")
    elif sys.stdin.isatty():
        value = getpass.getpass(f"value of {args.name} (hidden): ")
    else:
        value = sys.stdin.read()
    cfg = config.load_infra(_project(args).root)
    env = set_secret(context(cfg, _err), cfg, args.name, value)
    print(f"secret {args.name} set on job {cfg.job}; the container sees it as ${env}")
    return 0


def cmd_secret_list(args) -> int:
    from ..providers.azure import config
    from ..providers.azure.run import context
    from ..providers.azure.secret import env_name, secret_names

    cfg = config.load_infra(_project(args).root)
    names = secret_names(context(cfg, _err), cfg)
    for n in names:
        print(f"{n}  -> ${env_name(n)}")
    if not names:
        print("no secrets on the job (set one with `aitk azure secret set hf-token`)")
    return 0


# -- runs: the `aitk jobs` commands, on the latest Azure job by default ---------------------------
def _with_job(args, command):
    """Run the `aitk jobs` command on the named job, or the latest Azure job."""
    args.id = _azure_job(_store(), args.id).id
    return command(args)


def cmd_run(args) -> int:
    from ..providers.azure import config, estimate
    from .jobs_cmds import submit_and_follow

    project = _project(args)
    cfg = config.load_infra(project.root, required=False)
    est = estimate.for_project(project, cfg)
    print(f"estimate: {est.line()}")
    for src in est.sources():
        print(f"  {src}")
    limit = (cfg.ask_above_usd if cfg is not None and cfg.ask_above_usd is not None
             else estimate.DEFAULT_ASK_ABOVE_USD)
    if est.cost is not None and est.cost > limit and not args.yes:
        print(f"this run is expected to cost more than ${limit:.2f} (ASK_ABOVE_USD in "
              f"{config.INFRA_FILE}). Start it? [y/N] ", end="", flush=True)
        try:
            answer = input().strip().lower()
        except EOFError:
            answer = ""
        if answer not in ("y", "yes"):
            print("not started")
            return 1
    return submit_and_follow("finetune", args, on="azure")


def cmd_logs(args) -> int:
    from .jobs_cmds import cmd_jobs_logs

    return _with_job(args, cmd_jobs_logs)


def cmd_stop(args) -> int:
    from .jobs_cmds import cmd_jobs_cancel

    return _with_job(args, cmd_jobs_cancel)


def cmd_status(args) -> int:
    from .jobs_cmds import cmd_jobs_list, cmd_jobs_show

    if not args.id:
        args.provider = "azure"
        return cmd_jobs_list(args)
    return _with_job(args, cmd_jobs_show)


def cmd_fetch(args) -> int:
    from .jobs_cmds import facade

    jobs = facade()
    rec = _azure_job(jobs.store, args.id)
    got = jobs.fetch(rec.id, publish=not args.no_publish)
    for k, v in got.items():
        print(f"  {k:14} {v}")
    if jobs.store.get(rec.id).status != rec.status:
        print(f"job {rec.id} {jobs.store.get(rec.id).status} (outputs fetched)")
    elif "adapter" in got and not args.no_publish:
        print("the adapter is now the project's current one: `aitk export`, then `aitk chat`")
    return 0


# -- inference endpoint -------------------------------------------------------------------------
def _read_api_key(args) -> str | None:
    """The endpoint's API key, from --from-env VAR, a hidden prompt or stdin; never from argv."""
    if not args.api_key_secret:
        return None
    if args.from_env:
        value = os.environ.get(args.from_env)
        if not value:
            raise AitkError(f"environment variable {args.from_env} is empty or unset", "export it first")
    elif sys.stdin.isatty():
        value = getpass.getpass("API key for the endpoint (hidden): ")
    else:
        value = sys.stdin.read()
    value = (value or "").strip("\r\n")
    if not value:
        raise AitkError("empty API key", "pass it on stdin, at the prompt, or with --from-env VAR")
    return value


def cmd_deploy(args) -> int:
    from ..providers.azure import config
    from ..providers.azure.inference import deploy
    from ..providers.azure.run import context

    project = _project(args)
    cfg = config.load_infra(project.root)
    api_key = _read_api_key(args)
    data = deploy(context(cfg, _err), project, cfg, adapter=args.adapter, gpu=args.gpu, api_key=api_key,
                  progress=lambda s: print("  " + s, flush=True))
    print(f"deployed revision {data['ACA_REVISION']} ({data['WORKLOAD_PROFILE']}, adapter {data['ADAPTER']})")
    print(f"endpoint {data['ACA_APP_ENDPOINT']}  (OpenAI API: {data['OPENAI_BASE_URL']})")
    if data.get("API_KEY_SECRET"):
        print(f"requests need `Authorization: Bearer <key>` (the key is the app secret {data['API_KEY_SECRET']})")
    print(f"chat with it: `aitk chat --endpoint {data['OPENAI_BASE_URL']}`")
    return 0


def cmd_endpoint(args) -> int:
    from ..providers.azure import config
    from ..providers.azure.inference import endpoint
    from ..providers.azure.run import context

    project = _project(args)
    cfg = None if args.offline else config.load_infra(project.root)
    data = endpoint(None if args.offline else context(cfg, _err), project.root, cfg)
    if args.json:
        print(json.dumps(data, indent=2))
        return 0
    live = data.get("live") or {}
    print(f"endpoint   {data['ACA_APP_ENDPOINT']}")
    print(f"openai     {data.get('OPENAI_BASE_URL') or data['ACA_APP_ENDPOINT'] + '/v1'}")
    print(f"app        {data['ACA_APP_NAME']} in {data['RESOURCE_GROUP_NAME']}")
    print(f"revision   {live.get('ACA_REVISION') or data.get('ACA_REVISION')}"
          + (f"  ready {live['READY_REVISION']}, {live['PROVISIONING_STATE']}" if live else ""))
    print(f"deploy     {data.get('DEPLOY_FOLDER')}  adapter {data.get('ADAPTER')}  {data.get('WORKLOAD_PROFILE')}")
    print(f"api key    {'required (secret ' + data['API_KEY_SECRET'] + ')' if data.get('API_KEY_SECRET') else 'none'}")
    return 0


def cmd_app_logs(args) -> int:
    from ..providers.azure import config
    from ..providers.azure.inference import load_inference, stream_app_logs
    from ..providers.azure.run import context

    project = _project(args)
    cfg = config.load_infra(project.root)
    name = load_inference(project.root)["ACA_APP_NAME"]
    try:
        stream_app_logs(context(cfg, _err), cfg, name, lambda line: print(line, flush=True), follow=args.follow,
                        tail=args.tail)
    except KeyboardInterrupt:
        pass
    return 0


# -- parser -------------------------------------------------------------------------------------
def _project_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--project", "-P", metavar="DIR", help="project folder (default: the one around the current dir)")


def _where_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--subscription", metavar="ID", help="Azure subscription id")
    p.add_argument("--resource-group", "-g", metavar="RG", help="resource group (created if missing)")
    p.add_argument("--location", "-l", metavar="REGION", help="Azure region, e.g. westus3, swedencentral")


def register(subparsers) -> argparse.ArgumentParser:
    """Add `aitk azure ...` to the CLI's subparsers."""
    az = subparsers.add_parser("azure", help="fine-tune on a GPU in Azure Container Apps")
    sub = az.add_subparsers(dest="azure_command", metavar="COMMAND", required=True)

    p = sub.add_parser("login", help="sign in (env / az / azd silently, else a device code)")
    p.add_argument("--device-code", action="store_true", help="sign in with a device code even if a silent way works")
    p.add_argument("--check", action="store_true", help="try each silent sign-in source in order (environment, "
                   "workload identity, managed identity, Azure CLI, azd, remembered) and say which one answered")
    p.add_argument("--remember", action="store_true", help="persist the token cache (your consent) so background "
                   "watchers and later sessions stay signed in")
    p.add_argument("--allow-unencrypted", action="store_true",
                   help="with --remember on a machine without a keyring: keep the cache in a user-only file")
    p.add_argument("--tenant", help="directory (tenant) id or domain for the device-code sign-in")
    _where_args(p)
    p.set_defaults(func=cmd_login)

    p = sub.add_parser("logout", help="forget the remembered sign-in")
    p.set_defaults(func=cmd_logout)

    p = sub.add_parser("whoami", help="who is signed in, and the chosen subscription, group and region")
    p.add_argument("--list", action="store_true", help="list the subscriptions visible")
    p.set_defaults(func=cmd_whoami)

    p = sub.add_parser("provision", help="create what is missing: group, storage + share, logs, GPU environment, job")
    _project_arg(p)
    _where_args(p)
    p.add_argument("--gpu", choices=["a100", "t4"], help="serverless GPU (default a100: Consumption-GPU-NC24-A100)")
    p.add_argument("--image", help="training image (built from infra/docker/Dockerfile)")
    p.add_argument("--timeout", type=int, metavar="SECONDS", help="execution timeout (default 10800)")
    p.add_argument("--storage-account", help="storage account name (default derived from the group)")
    p.add_argument("--job", help="Container Apps job name (default derived from the group)")
    p.add_argument("--dry-run", action="store_true", help="show what exists and what would be created")
    p.add_argument("--registry-server", metavar="HOST", help="a private --image's registry, e.g. myacr.azurecr.io")
    p.add_argument("--registry-identity", metavar="ID", help="pull with a managed identity: 'system' or a "
                   "user-assigned identity's resource id (give it AcrPull on the registry)")
    p.add_argument("--registry-username", metavar="USER", help="pull with a username; the password is asked "
                   "(hidden) and stored as the job secret registry-password")
    p.add_argument("--registry-password-env", metavar="VAR", help="take the registry password from this variable")
    p.set_defaults(func=cmd_provision)

    p = sub.add_parser("quota", help="GPU quota (serverless and dedicated), usage and the profiles a region offers")
    _project_arg(p)
    p.add_argument("--subscription", metavar="ID", help="Azure subscription id")
    p.add_argument("--location", "-l", metavar="REGION", help="Azure region (default: the project's)")
    p.add_argument("--gpu", choices=["a100", "t4"], help="GPU to check (default: the project's, else a100)")
    p.set_defaults(func=cmd_quota)

    secret = sub.add_parser("secret", help="job secrets (hf-token -> $HF_TOKEN)").add_subparsers(
        dest="secret_command", metavar="COMMAND", required=True)
    p = secret.add_parser("set", help="set a job secret; the value is read hidden, never from the command line")
    p.add_argument("name", help="secret name, e.g. hf-token")
    p.add_argument("--from-env", metavar="VAR", help="take the value from this environment variable")
    _project_arg(p)
    p.set_defaults(func=cmd_secret_set)
    p = secret.add_parser("list", help="secret names on the job (never values)")
    _project_arg(p)
    p.set_defaults(func=cmd_secret_list)

    p = sub.add_parser("run", help="fine-tune the project on Azure (a job in the queue)")
    _project_arg(p)
    p.add_argument("--detach", "-d", action="store_true", help="submit and return")
    p.add_argument("--verbose", "-v", action="store_true", help="print the whole log, not just progress")
    p.add_argument("--yes", "-y", action="store_true", help="start without asking, whatever the cost estimate")
    p.set_defaults(func=cmd_run)

    from .jobs_cmds import add_logs_args, add_show_args

    p = sub.add_parser("logs", help="a remote job's log (= `aitk jobs logs`; default: the latest Azure job)")
    p.add_argument("id", nargs="?", help="job id (default: the latest Azure job)")
    add_logs_args(p)
    p.set_defaults(func=cmd_logs)

    p = sub.add_parser("stop", help="stop a remote job's execution (= `aitk jobs cancel`)")
    p.add_argument("id", nargs="?", help="job id (default: the latest Azure job)")
    p.set_defaults(func=cmd_stop)

    p = sub.add_parser("fetch", help="download a finished job's adapter, metrics and logs (again)")
    p.add_argument("id", nargs="?", help="job id (default: the latest Azure job)")
    p.add_argument("--no-publish", action="store_true", help="do not make the adapter the project's current one")
    p.set_defaults(func=cmd_fetch)

    p = sub.add_parser("status", help="Azure jobs (= `aitk jobs list`), or one with its live execution "
                       "(= `aitk jobs show`)")
    p.add_argument("id", nargs="?", help="job id")
    add_show_args(p)
    p.add_argument("--limit", type=int, default=20)
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("deploy", help="serve the exported model from an Azure Container App (new revision)")
    _project_arg(p)
    p.add_argument("--gpu", action="store_true", help="run on the environment's GPU workload profile (default CPU)")
    p.add_argument("--adapter", choices=["tuned", "base"], default="tuned", help="default adapter (default tuned)")
    p.add_argument("--api-key-secret", action="store_true",
                   help="require an API key: read it hidden (or from stdin / --from-env) and store it as the app "
                        "secret api-key ($AITK_API_KEY in the container)")
    p.add_argument("--from-env", metavar="VAR", help="with --api-key-secret: take the key from this variable")
    p.set_defaults(func=cmd_deploy)

    p = sub.add_parser("endpoint", help="the deployed endpoint (infra/inference.config.json + the live app)")
    _project_arg(p)
    p.add_argument("--json", action="store_true")
    p.add_argument("--offline", action="store_true", help="do not ask Azure, show the file only")
    p.set_defaults(func=cmd_endpoint)

    p = sub.add_parser("app-logs", help="the inference app's console log (live with -f)")
    _project_arg(p)
    p.add_argument("--follow", "-f", action="store_true")
    p.add_argument("--tail", type=int, default=100, metavar="N", help="lines to replay first (default 100)")
    p.set_defaults(func=cmd_app_logs)
    return az
