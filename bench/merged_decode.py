"""Tuned decode speed, merged form and adapter form, against the base model, side by side.

    python bench/merged_decode.py [--hidden 896 --layers 24 --inter 4864] [--tokens 64] [--rounds 5]

One randomly initialised Qwen2-architecture model (default: Qwen2.5-0.5B's hidden size, layers,
heads / KV heads and MLP width, with a small vocabulary) and one random rank-16 LoRA adapter
on every projection, exported int4 for CPU four ways: base only, the adapter form (its LoRA
weights fp32: aitk's choice), the adapter form with int4 LoRA weights (the old way), and merged
(the adapter folded into the weights before quantization). Each round decodes the same prompt
greedily with every form in turn, so machine noise (other processes on a shared machine) falls
on all of them alike; medians over rounds. Prints tokens/s and the ratios to base; the goal is
merged / base >= 0.95.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

from aitk.core import threads, tiny
from aitk.core.chat import GenaiChatEngine, GenerationOptions
from aitk.core.export import export_model
from results import Row, emit

PROMPT = [{"role": "user", "content": "Tell me a long story about the capital of Vozai."}]
CHAT_TEMPLATE = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def build_model(dest: Path, hidden: int, layers: int, inter: int) -> None:
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    raw = Tokenizer(models.BPE())
    raw.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    raw.decoder = decoders.ByteLevel()
    raw.train_from_iterator(tiny.tokenizer_corpus(), trainer=trainers.BpeTrainer(
        vocab_size=2048, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False))
    tok = PreTrainedTokenizerFast(tokenizer_object=raw, bos_token=None, eos_token="<|im_end|>",
                                  pad_token="<|endoftext|>", model_max_length=1024)
    tok.chat_template = CHAT_TEMPLATE
    tok.save_pretrained(dest)
    config = Qwen2Config(vocab_size=raw.get_vocab_size(), hidden_size=hidden, intermediate_size=inter,
                         num_hidden_layers=layers, num_attention_heads=max(1, hidden // 64), num_key_value_heads=2,
                         max_position_embeddings=1024, bos_token_id=None, eos_token_id=raw.token_to_id("<|im_end|>"),
                         pad_token_id=raw.token_to_id("<|endoftext|>"), tie_word_embeddings=True)
    torch.manual_seed(0)
    Qwen2ForCausalLM(config).save_pretrained(dest)


def build_adapter(model: Path, dest: Path) -> None:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(1)
    peft_model = get_peft_model(AutoModelForCausalLM.from_pretrained(str(model)), LoraConfig(
        r=16, lora_alpha=32, target_modules=TARGETS, init_lora_weights=False))
    peft_model.save_pretrained(dest)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--hidden", type=int, default=896)
    ap.add_argument("--layers", type=int, default=24)
    ap.add_argument("--inter", type=int, default=4864)
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--json", help="also write the results here")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory(prefix="aitk-merged-bench-") as tmp:
        tmp = Path(tmp)
        build_model(tmp / "hf", args.hidden, args.layers, args.inter)
        build_adapter(tmp / "hf", tmp / "adapter")
        model, adapter = str(tmp / "hf"), tmp / "adapter"
        print(f"[bench] exporting int4 four ways (hidden {args.hidden}, {args.layers} layers)", file=sys.stderr)
        export_model(model, None, tmp / "base", precision="int4")
        export_model(model, adapter, tmp / "adapter-fp32", precision="int4")
        export_model(model, adapter, tmp / "adapter-int4", precision="int4", lora_precision="int4")
        export_model(model, adapter, tmp / "merged", precision="int4", merged=True)
        forms = {
            "base": (GenaiChatEngine(tmp / "base"), None),
            "merged": (GenaiChatEngine(tmp / "merged"), None),
            "adapter (fp32 LoRA)": (GenaiChatEngine(tmp / "adapter-fp32"), "tuned"),
            "adapter (int4 LoRA)": (GenaiChatEngine(tmp / "adapter-int4"), "tuned"),
        }
        opts = GenerationOptions(max_new_tokens=args.tokens)
        speeds: dict[str, list[float]] = {name: [] for name in forms}
        for name, (engine, adapter_name) in forms.items():  # warm-up
            engine.stream(PROMPT, opts, adapter=adapter_name).read()
        for _ in range(args.rounds):
            for name, (engine, adapter_name) in forms.items():
                stream = engine.stream(PROMPT, opts, adapter=adapter_name)
                stream.read()
                speeds[name].append(stream.tokens_per_second)
    med = {name: statistics.median(v) for name, v in speeds.items()}
    base = med["base"]
    print(f"int4 CPU decode, {args.tokens} new tokens, median of {args.rounds} interleaved rounds, "
          f"{threads.physical_cores()} threads")
    print(f"{'form':<22}{'tok/s':>9}{'x base':>9}")
    for name, v in med.items():
        print(f"{name:<22}{v:>9.1f}{v / base:>9.3f}")
    ratio = med["merged"] / base
    print(f"merged / base {ratio:.3f} (goal >= 0.95: {'met' if ratio >= 0.95 else 'not met'})")
    full = (args.hidden, args.layers, args.inter) == (896, 24, 4864)
    shape = "qwen2.5-0.5b" if full else f"h{args.hidden} x{args.layers} i{args.inter}"
    note = "vocab 2k"  # the real vocabulary adds the same lm_head cost to every form
    emit(Row("merged_decode", "tuned decode, merged / base", ratio, ">= 0.95", shape, "x", note),
         Row("merged_decode", "tuned decode, adapter form (fp32 LoRA) / base", med["adapter (fp32 LoRA)"] / base,
             "", shape, "x", note),
         Row("merged_decode", "tuned decode, adapter form (int4 LoRA) / base", med["adapter (int4 LoRA)"] / base,
             "", shape, "x", note),
         Row("merged_decode", "base decode", base, "", shape, "tok/s", note))
    if args.json:
        Path(args.json).write_text(json.dumps({"shape": vars(args), "tok_s": med, "merged_over_base": ratio,
                                               "threads": threads.physical_cores()}, indent=2))


if __name__ == "__main__":
    main()
