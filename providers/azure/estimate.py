"""GPU time and cost of a remote fine-tune, before it starts: `aitk azure run` and the app's summary.

Time = start-up (GPU replica, image pull, installing aitk from the share) + training, where training
tokens = steps x batch x accumulation x sequence length, FLOPs per token ~ 4 P for LoRA (forward,
and backward through frozen weights; 6 P with gradient checkpointing; QLoRA dequantizes: x1.3), and
the GPU's sustained rate = peak x utilisation (THROUGHPUT, with its source). Cost = time x the
profile's hourly price (PRICES, with date and source), which a project overrides with
GPU_PRICE_PER_HOUR in infra/finetuning.config.json. Deliberately rough: it names its inputs.

Nothing here imports the Azure SDK, torch or the network: the app calls it while painting.
"""

from __future__ import annotations

from dataclasses import dataclass

from . import config


@dataclass(frozen=True)
class Throughput:
    peak_tflops: float  # dense tensor-core peak at the training dtype (bf16 / fp16)
    utilisation: float  # share of peak a small-model LoRA fine-tune sustains
    startup_min: float  # replica + image pull + install from the share, first run of a share
    source: str


@dataclass(frozen=True)
class Price:
    per_hour: float  # USD per GPU-hour of the whole replica (GPU + its vCPUs and memory)
    date: str
    source: str


THROUGHPUT = {
    "a100": Throughput(312.0, 0.30, 10.0, "NVIDIA A100 datasheet: 312 TFLOPS bf16 dense; 30% utilisation assumed "
                       "for LoRA on small models (typical MFU 25-40%); start-up: a ~3 GB image pull plus pip install"),
    "t4": Throughput(65.0, 0.30, 10.0, "NVIDIA T4 datasheet: 65 TFLOPS fp16 dense; 30% utilisation assumed; "
                     "start-up as for A100"),
}
PRICES = {
    "a100": Price(3.67, "2025-06", "Azure list price of the same GPU as a VM (NC24ads A100 v4, pay-as-you-go, "
                  "East US), standing in for the Container Apps GPU-second meter: check "
                  "https://azure.microsoft.com/pricing/details/container-apps/ for your region"),
    "t4": Price(0.526, "2025-06", "Azure list price of the same GPU as a VM (NC4as T4 v3, pay-as-you-go, East US), "
                "standing in for the Container Apps GPU-second meter: check "
                "https://azure.microsoft.com/pricing/details/container-apps/ for your region"),
}
DEFAULT_ASK_ABOVE_USD = 5.0  # ask before a run expected to cost more (ASK_ABOVE_USD in the infra file)


@dataclass
class Estimate:
    gpu: str
    steps: int
    tokens: int
    params: int | None
    train_h: float | None
    startup_h: float
    price: Price

    @property
    def hours(self) -> float | None:
        return None if self.train_h is None else self.train_h + self.startup_h

    @property
    def cost(self) -> float | None:
        return None if self.hours is None else self.hours * self.price.per_hour

    def line(self) -> str:
        from ...core.estimates import human_hours

        if self.hours is None:
            return (f"{self.gpu.upper()}: no time estimate (the base model's size is unknown); "
                    f"${self.price.per_hour:.2f} per GPU-hour")
        return (f"{self.gpu.upper()}: ~{human_hours(self.hours)} of GPU time ({self.steps} steps, "
                f"{self.tokens / 1e6:.1f}M tokens, {human_hours(self.startup_h)} start-up) ≈ ${self.cost:.2f} "
                f"at ${self.price.per_hour:.2f}/h")

    def sources(self) -> list[str]:
        return [f"throughput: {THROUGHPUT[self.gpu].source}",
                f"price ({self.price.date}): {self.price.source}"]


def _params(settings) -> int | None:
    try:
        from ...core import catalog

        return int(catalog.get(settings.model.id).params)
    except Exception:  # noqa: BLE001 - a model outside the catalog has no estimate, never an error
        return None


def estimate(settings, gpu: str, *, price_per_hour: float | None = None, rows: int | None = None) -> Estimate:
    """`settings`: the project's (ProjectSettings); `rows`: training rows, for epoch-based runs."""
    g = config.gpu(gpu).key
    ft = settings.finetune
    per_step = ft.per_device_train_batch_size * ft.gradient_accumulation_steps
    if ft.max_steps > 0:
        steps = ft.max_steps
    else:
        steps = int(max(1, -(-(rows or 1000) // per_step)) * ft.num_train_epochs)
    tokens = steps * per_step * settings.data.source_max_len
    params = _params(settings)
    tp = THROUGHPUT[g]
    train_h = None
    if params:
        flops = tokens * params * (6 if ft.gradient_checkpointing else 4) * (1.3 if ft.method == "qlora" else 1.0)
        train_h = flops / (tp.peak_tflops * 1e12 * tp.utilisation) / 3600
    base = PRICES[g]
    price = base if price_per_hour is None else Price(float(price_per_hour), "your setting",
                                                      "GPU_PRICE_PER_HOUR in infra/finetuning.config.json")
    return Estimate(g, steps, tokens, params, train_h, tp.startup_min / 60, price)


def for_project(project, cfg=None) -> Estimate:
    """The estimate for a loaded project on its Azure GPU (cfg: its InfraConfig, if provisioned)."""
    gpu = cfg.gpu if cfg is not None else config.DEFAULT_GPU
    rows = None
    if project.settings.finetune.max_steps <= 0:
        try:
            path = project.root / project.settings.data.dataset
            with open(path, "rb") as f:
                rows = sum(1 for line in f if line.strip())
        except OSError:
            rows = None
    return estimate(project.settings, gpu, price_per_hour=getattr(cfg, "price_per_hour", None), rows=rows)
