"""`aitk push`: a project's adapter (peft format), its ONNX export and a model card, to a Hugging
Face repo in one commit.

What is uploaded is staged first in a temporary folder from consistent snapshots of the
published folders (a fine-tune publishing meanwhile cannot mix two versions), then sent with
`HfApi.create_repo` + `upload_folder`. The token comes from HF_TOKEN or the HF token file
(core/hub.hf_token) and is passed to the client only, never written anywhere.
"""

from __future__ import annotations

import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

from . import hub, model_card, publish
from .errors import AitkError
from .jobs import JobStore

REPO_RE = r"^[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*$"


@dataclass
class PushResult:
    repo: str
    url: str
    commit: str | None
    files: list[str]


def _files(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())


def stage(project, into: Path, store: JobStore | None = None) -> list[str]:
    """adapter/, onnx/<precision>/, README.md and loss.svg under `into`; the files, relative."""
    if publish.snapshot(project.adapter_dir, into / "adapter") is None or \
            not (into / "adapter" / "adapter_config.json").is_file():
        raise AitkError(f"{project.name} has no fine-tuned adapter to push", "run `aitk finetune` first")
    export = publish.current_export(project) or next(iter(publish.list_exports(project.root / "models" / "onnx")), None)
    if export is not None:
        publish.snapshot(export, into / "onnx" / export.name)
    for stamp in into.rglob(publish.STAMP):
        stamp.unlink()  # aitk's own version marker, meaningless in a Hub repo
    facts = model_card.gather(project, store or JobStore())
    svg = model_card.loss_svg(facts.metrics)
    if svg:
        (into / model_card.LOSS_SVG).write_text(svg, encoding="utf-8")
    files = [*_files(into), model_card.CARD]
    (into / model_card.CARD).write_text(model_card.card(facts, files=sorted(files),
                                                        chart=model_card.LOSS_SVG if svg else None), encoding="utf-8")
    return sorted(files)


def push(project, repo: str, *, private: bool = False, store: JobStore | None = None) -> PushResult:
    if not re.match(REPO_RE, repo):
        raise AitkError(f"{repo!r} is not a Hub repo id", "pass --repo OWNER/NAME, e.g. --repo alice/qa-lora")
    if hub.is_offline():
        raise AitkError("HF_HUB_OFFLINE is set: pushing needs the Hub", "unset HF_HUB_OFFLINE to push")
    token = hub.hf_token()
    if not token:
        raise AitkError("no Hugging Face token to push with",
                        f"create a write token at {hub.TOKEN_URL} and `export HF_TOKEN=hf_...` (or `hf auth login`)")
    from huggingface_hub import HfApi
    from huggingface_hub import errors as hfe
    from huggingface_hub.utils import disable_progress_bars

    disable_progress_bars()  # tqdm bars would garble the CLI's lines and the app's log

    endpoint = hub.hf_endpoint()
    with tempfile.TemporaryDirectory(prefix="aitk-push-") as tmp:
        staged = Path(tmp) / "repo"
        files = stage(project, staged, store)
        api = HfApi(endpoint=endpoint, token=token)
        try:
            url = api.create_repo(repo, private=private, exist_ok=True, repo_type="model")
            info = api.upload_folder(folder_path=str(staged), repo_id=repo, repo_type="model",
                                     commit_message=f"aitk push: {project.name}")
        except hfe.HfHubHTTPError as e:
            status = e.response.status_code if e.response is not None else None
            if status in (401, 403):
                raise AitkError(f"{endpoint} refused the push to {repo} (HTTP {status})",
                                "the token needs write access to that owner: a write token, or an org role "
                                "that may create repos") from None
            raise AitkError(f"pushing to {repo} failed: {str(e).splitlines()[0]}", "check the repo id and retry") \
                from None
        except (OSError, ValueError, RuntimeError) as e:
            cause = e.__cause__ or e  # huggingface_hub wraps an upload's failure in a RuntimeError
            said = str(cause).splitlines()[0] if str(cause) else ""
            raise AitkError(f"pushing to {repo} failed: {type(cause).__name__}: {said}".rstrip(": "),
                            f"check that {endpoint} is reachable and retry") from None
    return PushResult(repo, str(url), getattr(info, "oid", None), files)


def copy_report(project, job_id: str | None, out_dir: Path, store: JobStore | None = None) -> list[Path]:
    """`aitk jobs report`: the card and chart of a fine-tune in `out_dir`."""
    facts = model_card.gather(project, store or JobStore(), job_id)
    return model_card.write_report(facts, out_dir)

