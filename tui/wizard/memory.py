"""The memory a fine-tune of these settings needs on the chosen device, against what it has."""

from __future__ import annotations

from rich.text import Text

RUNTIME = {"cpu": "cpu", "cuda": "cuda", "dml": "directml"}


def chosen_device(settings, device_info) -> str:
    d = settings.target.device
    if d == "auto":
        return device_info.best if device_info is not None else "cpu"
    return d


def estimate_text(entry, settings, device_info) -> Text:
    """One or two lines: `≈ 2.1 GiB (weights …) · this machine: 6.5 GiB usable · fits`."""
    if entry is None:
        return Text("Memory estimate: none (the model is not in the catalog)", style="dim")
    from aitk.core import estimates
    from aitk.core.catalog import human_bytes

    device = chosen_device(settings, device_info)
    runtime = RUNTIME.get(device, "cpu")
    f = settings.finetune
    try:
        est = estimates.memory_estimate(
            entry, f.method, runtime, batch_size=f.per_device_train_batch_size,
            seq_len=settings.data.source_max_len, lora_r=f.lora_r, target_modules=f.target_modules or None,
            compute_dtype=f.compute_dtype, gradient_checkpointing=f.gradient_checkpointing)
    except Exception as e:  # noqa: BLE001 - an estimate must never block the form
        return Text(f"Memory estimate unavailable: {e}", style="dim")
    out = Text()
    out.append("Memory ", style="bold")
    out.append(f"≈ {human_bytes(est.total)} ")
    out.append(f"for {f.method} on {device}", style="dim")
    budget = estimates.device_budget(device_info, runtime) if device_info is not None else None
    if budget is None:
        out.append(" · device memory unknown", style="dim")
    elif est.total <= budget:
        out.append(f" · fits ({human_bytes(budget)} usable)", style="green")
    else:
        out.append(f" · does not fit ({human_bytes(budget)} usable): lower batch size, max length or "
                   "r, or use qlora / gradient checkpointing", style="bold red")
    parts = " + ".join(f"{k} {human_bytes(v)}" for k, v in est.parts.items() if v)
    out.append(f"\n{parts}", style="dim")
    return out
