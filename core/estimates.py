"""Will it fit? Memory and time estimates for fine-tuning and chatting with a catalog model.

`memory_estimate()` gives a documented, deliberately rough figure for LoRA / QLoRA training and
for ONNX inference per device, and `fits()` compares it with what `devices.detect()` found.
Unset knobs take the project defaults for the model (`defaults.default_settings`). Nothing here
touches the network or imports torch.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from .catalog import METHODS, CatalogEntry, GiB, MiB, Variant, human_bytes, normalize_runtime
from .defaults import default_settings
from .devices import DeviceInfo
from .errors import AitkError

BYTES_PER_PARAM = {"float32": 4.0, "fp32": 4.0, "bfloat16": 2.0, "float16": 2.0, "fp16": 2.0, "int8": 1.0,
                   # 4-bit with one fp16 scale per block of 32 (RTN/nf4 + double quant land close to this).
                   "int4": 0.5625, "nf4": 0.5625, "fp4": 0.5625}
# Training constants are fitted to the measurements in data/estimates_calibration.json (`aitk
# rehearse` runs at real shapes, written by bench/calibrate_estimates.py; tests/test_estimates.py
# holds every row to +-25%). GPUs: run that bench with `--device cuda` on the GPU (the peak is then
# torch.cuda.max_memory_allocated, which the CUDA context is not part of) and fit the same terms.
TRAIN_OVERHEAD = 1 * GiB        # GPU: framework, allocator slack, CUDA context
CPU_TRAIN_OVERHEAD = 380 * MiB  # CPU: RSS of a process with torch, transformers and peft loaded
LOGITS_COPIES = 3               # fp32 b x s x V tensors alive at the peak (logits, log-softmax, a gradient)
# CPU activations, in hidden-sized values per token per layer, as the process's RSS holds them
# (fitted to the calibration rows). Without checkpointing ~90: LoRA training keeps far more than a
# plain layer's 17 (Korthikanti et al.): a dropout copy of every adapted module's input, the
# adapters' own products, fp32 throughout. With checkpointing ~27, not the one (the layer's input)
# the checkpoint stores: each layer's recompute in the backward pass allocates its activations
# afresh and the allocator does not hand all of them back (measured: the tensors saved in the
# forward grow by one hidden vector per layer-token, the peak RSS by ~27).
CPU_LAYER_ACTIVATION_HIDDEN = 90
CPU_CKPT_RETAINED_HIDDEN = 27
INFER_OVERHEAD = 512 * MiB      # ORT GenAI session, tokenizer, buffers
DEFAULT_INFER_CONTEXT = 4096    # tokens of KV cache an estimate reserves (capped at the model's context)
RAM_USABLE = 0.85               # share of RAM a job may take (the rest: OS, the UI)
VRAM_USABLE = 0.95
# CPU step time, in core-seconds (fitted by bench/calibrate_estimates.py --fit): the FLOPs at a
# large-matmul rate, plus three memory-bound terms the FLOPs miss, each per token of a micro-batch:
# the loss over the vocabulary (softmax, its gradient), each layer's elementwise work and the
# efficiency its matmuls lose at small hidden sizes (per layer, hidden + intermediate), and the
# skinny LoRA matmuls and dropout (per adapter parameter). One FLOP rate alone put Qwen2.5-0.5B's
# 24-layer steps 1.4x over the 1.5B's; these four terms hold both shapes and both ranks (16, 64).
CPU_GFLOPS_PER_CORE = 117.0
CPU_SECONDS_PER_LOGIT = 1.75e-8       # per token x vocabulary entry
CPU_SECONDS_PER_ACTIVATION = 2.05e-7  # per token x layer x (hidden + intermediate)
CPU_SECONDS_PER_ADAPTER_PARAM = 4.31e-10  # per token x LoRA parameter
QLORA_CPU_FACTOR = 1.2          # 4-bit weights dequantized on every matmul (issue 17: 10.4-12.5 s vs ~10 s per step)


def _module_shapes(e: CatalogEntry) -> dict[str, tuple[int, int]]:
    h, inter = e.hidden_size, e.intermediate_size
    q = e.num_heads * e.head_dim
    kv = e.num_kv_heads * e.head_dim
    return {
        "q_proj": (h, q), "k_proj": (h, kv), "v_proj": (h, kv), "qkv_proj": (h, q + 2 * kv),
        "o_proj": (q, h), "dense": (q, h), "gate_proj": (h, inter), "up_proj": (h, inter),
        "gate_up_proj": (h, 2 * inter), "down_proj": (inter, h), "fc1": (h, inter), "fc2": (inter, h),
    }


def lora_param_count(entry: CatalogEntry, r: int, targets: Iterable[str] | None = None) -> int:
    """Adapter parameters: per layer and target module, r × (d_in + d_out)."""
    shapes = _module_shapes(entry)
    total = 0
    for t in (list(targets) if targets else entry.lora_targets):
        d_in, d_out = shapes.get(t, (entry.hidden_size, entry.hidden_size))
        total += r * (d_in + d_out)
    return total * entry.num_layers


@dataclass(frozen=True)
class MemoryEstimate:
    model_id: str
    method: str
    device: str
    parts: dict[str, int]
    assumptions: dict[str, Any] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return sum(self.parts.values())

    def describe(self) -> str:
        body = " + ".join(f"{k} {human_bytes(v)}" for k, v in self.parts.items() if v)
        return f"{human_bytes(self.total)} ({body})"


def _defaults(entry: CatalogEntry, device: str):
    return default_settings("estimate", entry.id, {"directml": "dml"}.get(device, device))


def memory_estimate(entry: CatalogEntry, method: str, device: str = "cpu", *, variant: Variant | None = None,
                    batch_size: int | None = None, seq_len: int | None = None, lora_r: int | None = None,
                    target_modules: list[str] | None = None, compute_dtype: str | None = None,
                    gradient_checkpointing: bool | None = None, context: int | None = None) -> MemoryEstimate:
    """Rough peak memory of training or inference, in bytes. Unset knobs take the project defaults
    (`defaults.default_settings` for this model and device).

    Training (method `lora` or `qlora`), with P parameters, E = vocab × hidden embedding
    parameters, L layers, hidden h, a heads, vocab V, batch b, sequence s:

    - weights: LoRA keeps the base in the compute dtype (fp32 on CPU, bf16 on GPUs): P × bytes.
      QLoRA stores linear layers in 4 bit, (P − E) × 0.5625 B (nf4 plus double-quantized scales),
      and the embeddings in the compute dtype, E × bytes.
    - adapter: n = L × Σ_targets r × (d_in + d_out) parameters in fp32 (4 B); gradients 4 B each;
      AdamW's two moments 8 B each: n × 16 B in all.
    - activations, GPU (Korthikanti et al. 2022): b × s × 34 h × bytes/2 per layer, without their
      5 a s² attention-score term: PyTorch's SDPA never stores the scores whole (measured: b 1 × s
      2048 peaks where b 2 × s 1024 does). With gradient checkpointing each layer's input,
      b × s × h × bytes × L, plus one layer in full. CPU: the same form with the measured RSS,
      CPU_LAYER_ACTIVATION_HIDDEN (90) h-sized values per token per layer in full and
      CPU_CKPT_RETAINED_HIDDEN (27) per checkpointed layer.
    - logits: b × s × V × 4 B, LOGITS_COPIES (3) times: fp32 logits, the loss's log-softmax and a
      gradient of the same size are alive together in the backward pass. At a 152k vocabulary this
      is the largest term after the weights (0.6 GB a copy at b 1, s 1024); the formula's former
      two copies and 1 GiB overhead were 2x off at Qwen2.5-0.5B's shape, seq 1024.
    - overhead: CPU_TRAIN_OVERHEAD on CPU (the process's libraries and allocator slack; RSS is
      what is measured there), TRAIN_OVERHEAD on GPUs (framework, allocator, CUDA context).

    Calibration: the constants are fitted to `aitk rehearse` runs at Qwen2.5-0.5B's and 1.5B's
    real shapes, cut and full depth, LoRA r 16 and 64, on a quiet 2-core AVX-512 CPU
    (data/estimates_calibration.json; every row within ±25%, most within 5%).

    Inference (method `inference`, ONNX Runtime GenAI): the variant's download size when it is a
    published build, else E × io-bytes + (P − E) × bytes(precision) (io: fp32 on CPU, fp16 on
    GPU); KV cache 2 × L × kv-heads × head-dim × context × io-bytes, with context
    min(model context, 4096) unless given; overhead 0.5 GiB.

    Real peaks vary ±30% with kernels, padding and fragmentation: good for "fits / does not".
    """
    device = normalize_runtime(device)
    if method not in METHODS:
        raise AitkError(f"unknown method {method!r}", f"use one of: {', '.join(METHODS)}")
    P, E = entry.params, entry.vocab_size * entry.hidden_size
    L, h, V = entry.num_layers, entry.hidden_size, entry.vocab_size

    if method == "inference":
        variant = variant or (entry.variants_for(device) or [None])[0]
        precision = variant.precision if variant else ("fp32" if device == "cpu" else "fp16")
        io = 4 if device == "cpu" or precision == "fp32" else 2
        if variant and variant.published and variant.download_bytes:
            weights = variant.download_bytes
        elif precision in ("fp32", "fp16"):
            weights = int(P * BYTES_PER_PARAM[precision])
        else:
            weights = int(E * io + (P - E) * BYTES_PER_PARAM[precision])
        ctx = min(entry.context_length, context or DEFAULT_INFER_CONTEXT)
        kv = 2 * L * entry.num_kv_heads * entry.head_dim * ctx * io
        return MemoryEstimate(entry.id, method, device,
                              {"weights": weights, "kv_cache": kv, "overhead": INFER_OVERHEAD},
                              {"variant": variant.key if variant else None, "precision": precision,
                               "context": ctx, "published": bool(variant and variant.published)})

    defaults = _defaults(entry, device)
    ft, data_len = defaults.finetune, defaults.data.source_max_len
    dtype = compute_dtype or ("float32" if device == "cpu" else ft.compute_dtype)
    if device != "cpu" and dtype == "float32" and compute_dtype is None:
        dtype = "bfloat16"
    nbytes = BYTES_PER_PARAM[dtype]
    b = batch_size or ft.per_device_train_batch_size
    s = min(seq_len or data_len, entry.context_length)
    r = lora_r or ft.lora_r
    targets = target_modules or ft.target_modules or entry.lora_targets
    ckpt = ft.gradient_checkpointing if gradient_checkpointing is None else gradient_checkpointing

    if method == "qlora":
        weights = int((P - E) * BYTES_PER_PARAM["nf4"] + E * nbytes)
    else:
        weights = int(P * nbytes)
    n = lora_param_count(entry, r, targets)
    if device == "cpu":  # measured RSS (CPU_LAYER_ACTIVATION_HIDDEN, CPU_CKPT_RETAINED_HIDDEN)
        per_layer, kept = CPU_LAYER_ACTIVATION_HIDDEN * b * s * h * nbytes, CPU_CKPT_RETAINED_HIDDEN
    else:  # attention scores are never stored whole (SDPA)
        per_layer, kept = b * s * 34 * h * nbytes / 2, 1
    acts = (kept * b * s * h * nbytes * L + per_layer) if ckpt else per_layer * L
    parts = {
        "weights": weights,
        "adapter": n * 4,
        "gradients": n * 4,
        "optimizer": n * 8,
        "activations": int(acts),
        "logits": logits_bytes(V, b, s),
        "overhead": CPU_TRAIN_OVERHEAD if device == "cpu" else TRAIN_OVERHEAD,
    }
    return MemoryEstimate(entry.id, method, device, parts,
                          {"compute_dtype": dtype, "batch_size": b, "seq_len": s, "lora_r": r,
                           "target_modules": list(targets), "gradient_checkpointing": ckpt,
                           "adapter_params": n})


def logits_bytes(vocab: int, batch: int, seq: int) -> int:
    """The vocabulary-sized fp32 tensors of the loss at the training peak."""
    return int(LOGITS_COPIES * batch * seq * vocab * 4)


def device_budget(info: DeviceInfo, device: str) -> int | None:
    """Bytes a job may use on `device`; None when unknown (DirectML reports no memory here)."""
    device = normalize_runtime(device)
    if device == "cpu":
        return int(info.ram_mib * MiB * RAM_USABLE) if info.ram_mib else None
    if device == "cuda":
        if not info.gpus:
            return None
        return int(max(g.memory_mib for g in info.gpus) * MiB * VRAM_USABLE)
    return None


def available_runtimes(info: DeviceInfo) -> list[str]:
    out = []
    if info.gpus:
        out.append("cuda")
    if info.best == "dml" or "DmlExecutionProvider" in info.execution_providers:
        out.append("directml")
    out.append("cpu")
    return out


def best_runtime(info: DeviceInfo) -> str:
    return {"cuda": "cuda", "dml": "directml"}.get(info.best, "cpu")


@dataclass(frozen=True)
class Fit:
    model_id: str
    method: str
    device: str
    need_bytes: int
    have_bytes: int | None
    ok: bool | None              # None: the device's memory is unknown
    variant: str | None = None   # inference: the variant the estimate is for
    hours: float | None = None   # training on CPU: rough time of a default run
    speed: str | None = None     # training on CPU: "ok" | "slow" | "impractical"
    estimate: MemoryEstimate | None = None

    @property
    def practical(self) -> bool:
        return self.ok is not False and self.speed in (None, "ok")

    def summary(self) -> str:
        need = human_bytes(self.need_bytes)
        if self.ok is None:
            text = f"needs ~{need} (device memory unknown)"
        elif self.ok:
            text = f"fits (~{need} of {human_bytes(self.have_bytes)})"
        else:
            text = f"does not fit (~{need}, {human_bytes(self.have_bytes)} usable)"
        if self.speed and self.ok is not False:
            about = human_hours(self.hours)
            text += f", {self.speed} on CPU ({'' if about.startswith('<') else '~'}{about} per default run)"
        return text


def human_hours(h: float | None) -> str:
    if h is None:
        return "?"
    if h < 1 / 60:
        return "<1 min"
    if h < 1:
        return f"{h * 60:.0f} min"
    if h < 48:
        return f"{h:.0f} h"
    return f"{h / 24:.0f} days"


def train_flops_per_token(entry: CatalogEntry, seq_len: int, *, gradient_checkpointing: bool, lora_r: int,
                          target_modules: Iterable[str] | None = None) -> float:
    """Floating-point operations one training token costs with LoRA on frozen weights.

    Matmul weights W (every parameter but an untied input embedding, whose lookup is free): the
    forward pass is 2 W, the backward pass 2 W again (gradients of the activations only: the
    base is frozen), checkpointing recomputes the forward of the layers (2 (W − V h): the lm_head
    is not recomputed). Causal attention adds 2 s × q-width per layer forward, twice that
    backward. The adapter's n parameters cost 2 n forward and 4 n backward (their weight
    gradients too).
    """
    e = entry
    V, h, L = e.vocab_size, e.hidden_size, e.num_layers
    W = e.params - (0 if e.tie_embeddings else V * h)
    attn = 2 * seq_len * e.num_heads * e.head_dim * L
    n = lora_param_count(e, lora_r, target_modules)
    flops = (2 * W + attn + 2 * n) + (2 * W + 2 * attn + 4 * n)
    if gradient_checkpointing:
        flops += 2 * (W - V * h) + attn + 2 * n
    return flops


def cpu_step_terms(entry: CatalogEntry, *, batch_size: int, seq_len: int, gradient_checkpointing: bool,
                   lora_r: int, target_modules: Iterable[str] | None = None) -> dict[str, float]:
    """What one micro-batch's CPU time scales with, before the constants: its FLOPs, token x
    vocabulary, token x layer x (hidden + intermediate), token x adapter parameters."""
    e, tokens = entry, batch_size * seq_len
    return {
        "flops": tokens * train_flops_per_token(e, seq_len, gradient_checkpointing=gradient_checkpointing,
                                                lora_r=lora_r, target_modules=target_modules),
        "logits": tokens * e.vocab_size,
        "activations": tokens * e.num_layers * (e.hidden_size + e.intermediate_size),
        "adapter": tokens * lora_param_count(e, lora_r, target_modules),
    }


CPU_STEP_CONSTANTS = {"flops": 1 / (CPU_GFLOPS_PER_CORE * 1e9), "logits": CPU_SECONDS_PER_LOGIT,
                      "activations": CPU_SECONDS_PER_ACTIVATION, "adapter": CPU_SECONDS_PER_ADAPTER_PARAM}


def cpu_step_seconds(entry: CatalogEntry, method: str, cpu_count: int, *, batch_size: int, seq_len: int,
                     gradient_accumulation_steps: int, gradient_checkpointing: bool, lora_r: int,
                     target_modules: Iterable[str] | None = None) -> float:
    """Seconds per optimizer step of LoRA / QLoRA training on an otherwise idle CPU: each
    micro-batch's `cpu_step_terms` times CPU_STEP_CONSTANTS (core-seconds), over the cores, times
    the accumulation; QLoRA × QLORA_CPU_FACTOR. Fitted to wall time of calibration runs on a quiet
    machine (data/estimates_calibration.json), so it is for a machine the training has to itself.
    """
    terms = cpu_step_terms(entry, batch_size=batch_size, seq_len=seq_len,
                           gradient_checkpointing=gradient_checkpointing, lora_r=lora_r,
                           target_modules=target_modules)
    core_seconds = sum(CPU_STEP_CONSTANTS[k] * v for k, v in terms.items()) * gradient_accumulation_steps
    seconds = core_seconds / max(cpu_count, 1)
    return seconds * (QLORA_CPU_FACTOR if method == "qlora" else 1.0)


def cpu_training_hours(entry: CatalogEntry, method: str, cpu_count: int) -> float:
    """Rough wall time of a default training run on CPU: max_steps (1000 for an epoch-based run)
    × `cpu_step_seconds` at the project defaults for the model."""
    s = _defaults(entry, "cpu")
    ft = s.finetune
    steps = ft.max_steps if ft.max_steps > 0 else 1000
    per_step = cpu_step_seconds(entry, method, cpu_count, batch_size=ft.per_device_train_batch_size,
                                seq_len=min(s.data.source_max_len, entry.context_length),
                                gradient_accumulation_steps=ft.gradient_accumulation_steps,
                                gradient_checkpointing=ft.gradient_checkpointing, lora_r=ft.lora_r,
                                target_modules=ft.target_modules or entry.lora_targets)
    return steps * per_step / 3600


def fits(entry: CatalogEntry, info: DeviceInfo, method: str = "inference", device: str | None = None) -> Fit:
    """Does `method` (inference, lora, qlora) for `entry` fit on `device` (default: the best one)?"""
    device = normalize_runtime(device or best_runtime(info))
    est = memory_estimate(entry, method, device)
    have = device_budget(info, device)
    ok = None if have is None else est.total <= have
    hours = speed = None
    if method != "inference" and device == "cpu":
        hours = cpu_training_hours(entry, method, info.cpu_count)
        speed = "ok" if hours <= 1 else "slow" if hours <= 24 else "impractical"
    return Fit(entry.id, method, device, est.total, have, ok, est.assumptions.get("variant"),
               None if hours is None else round(hours, 4), speed, est)


def recommend_variant(entry: CatalogEntry, info: DeviceInfo) -> Variant | None:
    """The variant to chat with on this machine: the best runtime present that the model has,
    a published build before a local one, and one whose estimate fits."""
    for rt in available_runtimes(info):
        candidates = sorted(entry.variants_for(rt), key=lambda v: (not v.published,))
        for v in candidates:
            have = device_budget(info, rt)
            need = memory_estimate(entry, "inference", rt, variant=v).total
            if have is None or need <= have:
                return v
    return None
