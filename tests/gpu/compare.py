#!/usr/bin/env python3
"""fleetbench vs GuideLLM, per concurrency: writes OUT/table.md and OUT/guidellm.json.

Reads OUT/fleetbench.json (`controllerctl results --format json`: a list of point rows with
batch_size, output_throughput, ttft_s_p50, tpot_s_p50, itl_s_p50, verdict, …) and
GUIDELLM_DIR/c<N>.json (GuideLLM 0.8.1 `--output kind=json`, one benchmark per file).

Definitions compared:
  output tok/s   fleetbench output_throughput  vs GuideLLM metrics.output_tokens_per_second
                 .successful.mean (output tokens / measured window)
  TTFT p50       fleetbench ttft_s_p50         vs median over the measured requests of
                 requests.successful[].time_to_first_token_ms
  TPOT p50       fleetbench tpot_s_p50 = (e2e − ttft)/(output − 1), vLLM's definition, vs the
                 median over measured requests of inter_token_latency_ms (GuideLLM's
                 per-request (last token − first token)/(output − 1): the same definition).
                 GuideLLM's own "TPOT" (time_per_output_token_ms) is (last token − request
                 start)/output, i.e. includes TTFT; it is shown in its own column.
GuideLLM's aggregate metrics.*.successful.percentiles are token-weighted for ITL/TPOT (one
sample per token), so the per-request medians are computed here from requests.successful
(requests that started inside the benchmark's measured window [start_time, end_time]).
"""
import argparse
import glob
import json
import os
import re
import statistics


def pct_diff(a, b):
    if a is None or b is None or b == 0:
        return None
    return 100.0 * (a - b) / b


def fmt(v, nd=1):
    return "—" if v is None else f"{v:.{nd}f}"


def fmt_pct(v):
    return "—" if v is None else f"{v:+.1f}%"


def median(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def guidellm_point(path):
    d = json.load(open(path))
    if not d.get("benchmarks"):
        return None
    b = d["benchmarks"][0]
    m = b["metrics"]
    start, end = b.get("start_time"), b.get("end_time")
    reqs = b.get("requests", {}).get("successful", []) or []
    measured = [r for r in reqs if start is None or (r.get("request_start_time") or 0) >= start - 1e-6]

    def agg(name, key="median"):
        s = (m.get(name) or {}).get("successful") or {}
        if key.startswith("p"):
            return (s.get("percentiles") or {}).get(key)
        return s.get(key)

    return {
        "concurrency": b["config"]["strategy"].get("streams"),
        "measured_requests": (m.get("request_totals") or {}).get("successful"),
        "errored_requests": (m.get("request_totals") or {}).get("errored"),
        "incomplete_requests": (m.get("request_totals") or {}).get("incomplete"),
        "duration_s": b.get("duration"),
        "warmup_duration_s": b.get("warmup_duration"),
        "output_tps": agg("output_tokens_per_second", "mean"),
        "request_concurrency_mean": agg("request_concurrency", "mean"),
        # per-request medians over the measured requests
        "ttft_ms_p50": median([r.get("time_to_first_token_ms") for r in measured]),
        "itl_ms_p50": median([r.get("inter_token_latency_ms") for r in measured]),
        "tpot_incl_ttft_ms_p50": median([r.get("time_per_output_token_ms") for r in measured]),
        "e2e_s_p50": median([r.get("request_latency") for r in measured]),
        "prompt_tokens_p50": median([r.get("prompt_tokens") for r in measured]),
        "output_tokens_p50": median([r.get("output_tokens") for r in measured]),
        "per_request_samples": len(measured),
        # GuideLLM's own aggregates (token-weighted for ITL/TPOT)
        "agg_ttft_ms_p50": agg("time_to_first_token_ms", "p50"),
        "agg_itl_ms_p50": agg("inter_token_latency_ms", "p50"),
        "agg_tpot_ms_p50": agg("time_per_output_token_ms", "p50"),
        "warnings": [w.get("code") for w in b.get("warnings", []) or []],
        "request_body_example": (json.loads(reqs[0]["request_args"]).get("body", {}) if reqs and reqs[0].get("request_args") else None),
    }


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--guidellm-dir", required=True)
    ap.add_argument("--gpu", default="unknown")
    ap.add_argument("--batches", default="")
    a = ap.parse_args()

    fb = {}
    fb_path = os.path.join(a.out, "fleetbench.json")
    try:
        rows = json.load(open(fb_path))
    except Exception as e:  # missing or empty: the table says so
        rows = []
        print(f"compare.py: no fleetbench rows ({e})")
    for r in rows:
        c = r.get("batch_size")
        # the latest attempt of a concurrency wins
        if c is not None and (c not in fb or (r.get("started_unix_us") or 0) >= (fb[c].get("started_unix_us") or 0)):
            fb[c] = r

    gl = {}
    raw = {}
    for p in glob.glob(os.path.join(a.guidellm_dir, "c*.json")):
        mm = re.search(r"c(\d+)\.json$", p)
        try:
            pt = guidellm_point(p)
            # GuideLLM's own report minus the per-request list (prompts and outputs)
            d = json.load(open(p))
            for b in d.get("benchmarks", []):
                b.pop("requests", None)
            raw[int(mm.group(1))] = d
        except Exception as e:
            print(f"compare.py: {p}: {e}")
            continue
        if pt:
            gl[int(mm.group(1))] = pt
    if raw:
        json.dump({str(c): raw[c] for c in sorted(raw)}, open(os.path.join(a.out, "guidellm-raw.json"), "w"))

    order = [int(x) for x in a.batches.split()] if a.batches.strip() else []
    cs = order + sorted((set(fb) | set(gl)) - set(order))

    lines = [
        f"# fleetbench vs GuideLLM on one `transformers serve` engine",
        "",
        f"GPU (nvidia-smi): {a.gpu}; as fleetbench's agent discovered and recorded it: "
        + ", ".join(sorted({f"{f.get('gpu_model') or '?'} (driver {f.get('gpu_driver') or '?'})" for f in fb.values()}) or ["no points"]),
        "",
        "TPOT = (e2e − TTFT)/(output tokens − 1) per request for both tools (GuideLLM's per-request",
        "inter_token_latency_ms); `GL TPOT*` is GuideLLM's own TPOT, (last token − request start)/output,",
        "which includes TTFT. Δ = (fleetbench − GuideLLM)/GuideLLM. p50 = median over requests.",
        "`GL prompt tok`: prompt tokens the server counted for GuideLLM's requests (chat template included).",
        "",
        "| conc | fb out tok/s | GL out tok/s | Δ | fb TTFT p50 ms | GL TTFT p50 ms | Δ | fb TPOT p50 ms | GL TPOT p50 ms | Δ | GL TPOT* p50 ms | GL prompt tok | n fb/GL | fb warm-up waves | fb verdict |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|---|",
    ]
    summary = []
    for c in cs:
        f = fb.get(c) or {}
        g = gl.get(c) or {}
        f_tps = f.get("output_throughput")
        f_ttft = f["ttft_s_p50"] * 1000 if f.get("ttft_s_p50") is not None else None
        f_tpot = f["tpot_s_p50"] * 1000 if f.get("tpot_s_p50") is not None else None
        g_tps, g_ttft, g_tpot = g.get("output_tps"), g.get("ttft_ms_p50"), g.get("itl_ms_p50")
        verdict = f.get("verdict") or (f.get("state") or "no point")
        if f.get("error"):
            verdict += f" ({str(f['error'])[:80]})"
        n = f"{f.get('completed', '—')}/{g.get('measured_requests', '—')}"
        warm = "—" if not f else f"{f.get('warmup_waves', 0)} ({'converged' if f.get('warmup_converged') else 'cap'}, last {fmt(f.get('warmup_last_output_tps'))} tok/s)"
        lines.append(
            f"| {c} | {fmt(f_tps)} | {fmt(g_tps)} | {fmt_pct(pct_diff(f_tps, g_tps))} "
            f"| {fmt(f_ttft)} | {fmt(g_ttft)} | {fmt_pct(pct_diff(f_ttft, g_ttft))} "
            f"| {fmt(f_tpot, 2)} | {fmt(g_tpot, 2)} | {fmt_pct(pct_diff(f_tpot, g_tpot))} "
            f"| {fmt(g.get('tpot_incl_ttft_ms_p50'), 2)} | {fmt(g.get('prompt_tokens_p50'), 0)} | {n} | {warm} | {verdict.replace('|', '/')} |"
        )
        summary.append({
            "concurrency": c,
            "fleetbench": {k: f.get(k) for k in (
                "state", "verdict", "completed", "failed", "duration_s", "output_throughput",
                "ttft_s_p50", "tpot_s_p50", "itl_s_p50", "e2el_s_p50", "achieved_concurrency",
                "input_len_mismatches", "output_len_mismatches", "error", "fallbacks",
                "warmup_waves", "warmup_converged", "warmup_last_output_tps", "gpu_model",
                "gpu_driver", "client_cpu_cores", "client_cores")} if f else None,
            "guidellm": g or None,
            "diff_pct": {
                "output_tps": pct_diff(f_tps, g_tps),
                "ttft_p50": pct_diff(f_ttft, g_ttft),
                "tpot_p50": pct_diff(f_tpot, g_tpot),
            },
        })
    lines.append("")
    extra = [g for g in gl.values() if g.get("warnings")]
    if extra:
        lines.append("GuideLLM warnings: " + "; ".join(
            f"c={g['concurrency']}: {', '.join(g['warnings'])}" for g in extra))
        lines.append("")
    md = "\n".join(lines)
    open(os.path.join(a.out, "table.md"), "w").write(md + "\n")
    json.dump({"gpu": a.gpu, "points": summary}, open(os.path.join(a.out, "guidellm.json"), "w"), indent=1)
    print(md)


if __name__ == "__main__":
    main()
