"""GPU quota and capacity as Azure reports them: serverless and dedicated told apart, with the next step.

Container Apps has two GPU quotas per region: serverless (`SubscriptionConsumptionNCA100Gpus`, what
aitk's `Consumption-GPU-*` profiles use) and dedicated (`SubscriptionNCA100Gpus`, for dedicated
`NC24-A100` profiles such as AI Toolkit's). Dedicated is often 0 where serverless is not, so only the
quota of the profile the job runs on decides; both are shown.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from ...core.errors import AitkError
from . import config
from .errors import azure_call, quota_hint


@dataclass
class Quota:
    name: str  # as the usages API names it
    label: str
    used: int
    limit: int

    @property
    def free(self) -> int:
        return self.limit - self.used

    def line(self) -> str:
        return f"{self.label} ({self.name}): {self.used} of {self.limit} in use"


@dataclass
class GpuReport:
    gpu: config.Gpu
    location: str
    offered: list[str]  # workload profile types the region offers
    serverless: Quota | None
    dedicated: Quota | None
    other: dict[str, Quota] = field(default_factory=dict)  # the other GPUs' serverless quotas

    def lines(self) -> list[str]:
        gpus = sorted(n for n in self.offered if "GPU" in n.upper() or re.search(r"A100|T4|H100", n))
        out = [f"region {self.location}: GPU profiles offered: {', '.join(gpus) or 'none'}"]
        out.append(("serverless " + self.serverless.line()) if self.serverless
                   else f"serverless {self.gpu.key.upper()}: no quota line reported")
        out.append(("dedicated " + self.dedicated.line()) if self.dedicated
                   else f"dedicated {self.gpu.key.upper()}: no quota line reported")
        return out


def _quota(usages: list, pattern: str, serverless: bool) -> Quota | None:
    for u in usages:
        name = (u.name.value if u.name else "") or ""
        label = (u.name.localized_value if u.name else "") or name
        text = f"{name} {label}"
        if re.search(pattern, text, re.I) and re.search("gpu", text, re.I) \
                and bool(re.search("consumption", text, re.I)) == serverless:
            return Quota(name, label, int(u.current_value or 0), int(u.limit or 0))
    return None


def report(ctx, cfg) -> GpuReport:
    g = config.gpu(cfg.gpu)
    with azure_call(f"list the workload profiles offered in {cfg.location}", scope=f"subscription {cfg.subscription_id}"):
        offered = [p.name for p in ctx.apps.available_workload_profiles.get(cfg.location)]
    with azure_call(f"read the Container Apps quotas in {cfg.location}", scope=f"subscription {cfg.subscription_id}"):
        usages = list(ctx.apps.usages.list(cfg.location))
    exact = {(u.name.value if u.name else ""): u for u in usages}

    def find(name, pattern, serverless):
        u = exact.get(name)
        if u is not None:
            return Quota(name, (u.name.localized_value or name), int(u.current_value or 0), int(u.limit or 0))
        return _quota(usages, pattern, serverless)

    other = {k: q for k, v in config.GPUS.items() if k != g.key
             for q in [find(v.serverless_quota, v.kind_re, True)] if q is not None}
    return GpuReport(g, cfg.location, offered, find(g.serverless_quota, g.kind_re, True),
                     find(g.dedicated_quota, g.kind_re, False), other)


def check(ctx, cfg, *, strict: bool, dedicated_profile: bool = False) -> tuple[GpuReport, list[str]]:
    """Refuse (with the next step) when the profile the job will run on cannot get a GPU; else warnings."""
    rep = report(ctx, cfg)
    g = rep.gpu
    if not dedicated_profile and g.profile_type not in rep.offered:
        others = [k for k, v in config.GPUS.items() if v.profile_type in rep.offered]
        raise AitkError(
            f"{cfg.location} does not offer the serverless GPU profile {g.profile_type}"
            + (f" (GPU profiles there: {', '.join(n for n in rep.offered if 'GPU' in n.upper())})"
               if any("GPU" in n.upper() for n in rep.offered) else " (no serverless GPUs there)"),
            (f"use --gpu {others[0]}, or " if others else "") + "choose a region with serverless GPUs, e.g. --location "
            + " / ".join(config.GPU_REGIONS_HINT))
    q = rep.dedicated if dedicated_profile else rep.serverless
    kind = "dedicated" if dedicated_profile else "serverless"
    warnings: list[str] = []
    if q is None:
        warnings.append(f"Azure reported no {kind} {g.key.upper()} quota line in {cfg.location}; "
                        "a run may wait for a GPU")
        return rep, warnings
    if q.limit < 1:
        alt = [k for k, oq in rep.other.items() if oq.limit >= 1]
        other_kind = rep.serverless if dedicated_profile else rep.dedicated
        hint = quota_hint(g.quota_label if not dedicated_profile else q.label, cfg.location, cfg.subscription_id)
        if alt:
            hint = f"or use --gpu {alt[0]} (its serverless quota is {rep.other[alt[0]].limit}); " + hint
        state = "; ".join(rep.lines()[1:])
        raise AitkError(f"your {kind} {g.key.upper()} GPU quota in {cfg.location} is 0 ({state})"
                        + (f"; the {'serverless' if dedicated_profile else 'dedicated'} quota "
                           f"({other_kind.limit}) does not apply to this profile" if other_kind else ""), hint)
    if q.free < 1:
        msg = f"all {q.limit} {kind} {g.key.upper()} GPUs in {cfg.location} are in use right now; a run will wait for one"
        if strict:
            raise AitkError(msg, quota_hint(g.quota_label, cfg.location, cfg.subscription_id))
        warnings.append(msg)
    return rep, warnings
