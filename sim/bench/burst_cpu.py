#!/usr/bin/env python3
# Cost of simulating a burst: python3 sim/bench/burst_cpu.py http://127.0.0.1:PORT SIM_PID
# (run `target/release/vllm-sim serve meta-llama/Llama-3.1-8B-Instruct --sim-gpu h100-sxm
# --sim-speedup 10 --port PORT` first; standard library only).
# 256 concurrent streaming completions of 1024 prompt tokens / 512 output tokens against a
# running vllm-sim; prints the sim process's CPU seconds (utime+stime from /proc) used.
import json, sys, threading, urllib.request, os
base, pid = sys.argv[1], int(sys.argv[2])
model = "meta-llama/Llama-3.1-8B-Instruct"
def post(path, body):
    req = urllib.request.Request(base + path, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    return urllib.request.urlopen(req, timeout=600)
# find a prompt of exactly 1024 tokens
words = ["w%d" % i for i in range(4000)]
lo, hi = 1, 4000
while lo < hi:
    mid = (lo + hi) // 2
    n = json.load(post("/tokenize", {"model": model, "prompt": " ".join(words[:mid])}))["count"]
    if n < 1024: lo = mid + 1
    else: hi = mid
prompt = " ".join(words[:lo])
print("prompt tokens", json.load(post("/tokenize", {"model": model, "prompt": prompt}))["count"])
def cpu():
    f = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")
toks = [0] * 256
def one(i):
    r = post("/v1/completions", {"model": model, "prompt": prompt, "max_tokens": 512, "ignore_eos": True, "stream": True})
    for line in r:
        if line.startswith(b"data: {"):
            d = json.loads(line[6:])
            if d.get("choices") and d["choices"][0].get("text"):
                toks[i] += 1
c0 = cpu()
ts = [threading.Thread(target=one, args=(i,)) for i in range(256)]
[t.start() for t in ts]; [t.join() for t in ts]
print("content chunks", sum(toks), "sim cpu s", round(cpu() - c0, 3))
