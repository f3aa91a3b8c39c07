"""A tiny random Llama (2 layers, hidden 64) with the same tokenizer files as mk_model.py:
for checking the kit on a CPU machine. Usage: python3 mk_tiny.py OUT_DIR"""
import os, shutil, sys, time
import torch
from transformers import LlamaConfig, LlamaForCausalLM
t = time.time()
cfg = LlamaConfig(vocab_size=49152, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
    num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=8192, rope_theta=500000.0,
    rms_norm_eps=1e-5, bos_token_id=1, eos_token_id=2, torch_dtype="float32")
m = LlamaForCausalLM(cfg)
for p in m.parameters():
    torch.nn.init.normal_(p, std=0.02)
out = sys.argv[1]
m.save_pretrained(out, safe_serialization=True)
for f in ['tokenizer.json', 'tokenizer_config.json', 'chat_template.jinja']:
    shutil.copy(os.path.join(os.path.dirname(os.path.abspath(__file__)), f), out)
print('model saved', out, round(time.time() - t, 1), 's', sum(p.numel() for p in m.parameters()) / 1e6, 'M params', flush=True)
