#!/usr/bin/env bash
# GPU validation kit: fleetbench vs GuideLLM on one `transformers serve` engine.
# Device entry point (see tests/gpu/README.md). Everything it keeps lands in $OUT:
#   table.md  fleetbench.json  guidellm.json  guidellm-raw.json  run.log  engine.log  fleet.log
#   guidellm.log
#
# Environment (all optional):
#   OUT               output folder (default ./gpu-out)
#   BATCHES           concurrencies (default "1 4 16 64 256")
#   INPUT_TOKENS      prompt tokens (256)          OUTPUT_TOKENS  output tokens (128)
#   FLEETBENCH_BIN    folder with controller, agent, controllerctl (default .gpubin)
#   RUNTIME           process (default: ONE fleetbench sweep over all BATCHES, the agent
#                     starting and stopping `transformers serve` itself; then run.sh starts
#                     the same command line once more for GuideLLM) | external (run.sh starts
#                     ONE engine; fleetbench, one sweep per batch size, and GuideLLM alternate
#                     on it)
#   GPU_MODEL_SCRIPT  script that writes the model folder (default tests/gpu/model/mk_model.py;
#                     tests/gpu/model/mk_tiny.py for a CPU check)
#   MODEL_DIR         model folder (/tmp/m8b); an existing folder with config.json is reused
#   WAVES             fleetbench: bursts of the batch size measured per point (2); GuideLLM
#                     sends WAVES × concurrency measured requests at that concurrency
#   WARMUP_MAX_WAVES, WARMUP_TOLERANCE  fleetbench [load.warmup] (4, 0.03)
#   GUIDELLM_WARMUP_MAX  GuideLLM warm-up requests = min(concurrency, this) (256): one wave
#   GUIDELLM_MATCH_PROMPT  1 (default): GuideLLM's chat text is shortened by the chat
#                     template's tokens, so both tools' prompts are INPUT_TOKENS long at the server
#   DEADLINE_S        the whole run's budget in seconds (530); steps are cut to fit it
#   SERVE_ARGS        extra `transformers serve` flags, for both runtimes (GPU default: none,
#                     dtype comes from the weights; CPU default: --cb-max-memory-percent 0.05)
#   ENDPOINT          chat (default) | completions, for both tools
#   PYTHON            interpreter (python3)     WHEELS  wheel folder (.whl; skipped if absent)
set -uo pipefail
T0=$(date +%s)
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT"

OUT=${OUT:-$ROOT/gpu-out}
BATCHES=${BATCHES:-"1 4 16 64 256"}
INPUT_TOKENS=${INPUT_TOKENS:-256}
OUTPUT_TOKENS=${OUTPUT_TOKENS:-128}
FLEETBENCH_BIN=${FLEETBENCH_BIN:-.gpubin}
RUNTIME=${RUNTIME:-process}
GPU_MODEL_SCRIPT=${GPU_MODEL_SCRIPT:-tests/gpu/model/mk_model.py}
MODEL_DIR=${MODEL_DIR:-/tmp/m8b}
WAVES=${WAVES:-2}
MIN_REQUESTS=${MIN_REQUESTS:-1}
WARMUP_MAX_WAVES=${WARMUP_MAX_WAVES:-4}
WARMUP_TOLERANCE=${WARMUP_TOLERANCE:-0.03}
GUIDELLM_WARMUP_MAX=${GUIDELLM_WARMUP_MAX:-256}
DEADLINE_S=${DEADLINE_S:-530}
RESERVE_S=${RESERVE_S:-25}
SERVE_ARGS=${SERVE_ARGS:-}
PYTHON=${PYTHON:-python3}
WHEELS=${WHEELS:-.whl}
ENDPOINT=${ENDPOINT:-chat}
ENGINE_PORT=${ENGINE_PORT:-8000}
CTRL_PORT=${CTRL_PORT:-50551}
WORK=${WORK:-/tmp/fbgpu}
ENGINE_START_TIMEOUT_S=${ENGINE_START_TIMEOUT_S:-300}

case "$OUT" in /*) ;; *) OUT=$ROOT/$OUT ;; esac
case "$FLEETBENCH_BIN" in /*) ;; *) FLEETBENCH_BIN=$ROOT/$FLEETBENCH_BIN ;; esac
case "$GPU_MODEL_SCRIPT" in /*) ;; *) GPU_MODEL_SCRIPT=$ROOT/$GPU_MODEL_SCRIPT ;; esac
rm -rf "$WORK"
# Binaries may travel gzipped (the device takes 64 MiB per call; stripped static builds
# are ~70 MB, ~26 MB gzipped): unpack them next to the run.
if ls "$FLEETBENCH_BIN"/*.gz > /dev/null 2>&1; then
  mkdir -p "$WORK/bin"
  for z in "$FLEETBENCH_BIN"/*.gz; do
    gzip -dc "$z" > "$WORK/bin/$(basename "$z" .gz)" && chmod +x "$WORK/bin/$(basename "$z" .gz)"
  done
  FLEETBENCH_BIN=$WORK/bin
fi
mkdir -p "$OUT" "$WORK/results" "$WORK/guidellm" "$WORK/sweeps"
LOG=$OUT/run.log
: > "$LOG"
log() { echo "[run.sh +$(( $(date +%s) - T0 ))s] $*" | tee -a "$LOG" >&2; }
left() { echo $(( DEADLINE_S - ($(date +%s) - T0) )); }
CTL=("$FLEETBENCH_BIN/controllerctl" --controller "http://127.0.0.1:$CTRL_PORT")
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_HUB_DISABLE_TELEMETRY=1
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false

# HTTP without depending on curl: http_ok URL [JSON_BODY] [TIMEOUT_S] (exit 0 on a 2xx)
http_ok() {
  if [ "${HTTP_CLIENT:-curl}" = curl ] && command -v curl > /dev/null 2>&1; then
    if [ -n "${2:-}" ]; then
      curl -sf -m "${3:-10}" -H 'content-type: application/json' -d "$2" "$1"
    else
      curl -sf -m "${3:-2}" "$1"
    fi
  else
    "$PYTHON" -c '
import sys, urllib.request
url, body, t = sys.argv[1], sys.argv[2], float(sys.argv[3])
req = urllib.request.Request(url, data=body.encode() if body else None,
                             headers={"content-type": "application/json"} if body else {})
try:
    print(urllib.request.urlopen(req, timeout=t).read().decode()[:500])
except Exception as e:
    print(e, file=sys.stderr); sys.exit(1)
' "$1" "${2:-}" "${3:-10}"
  fi
}

PIDS=()   # process-group leaders we started (setsid), stopped in reverse order
ENGINE_PID=""

tail_into() { # tail_into SRC DEST LINES [HEADER]: the last LINES lines of SRC, appended
  [ -f "$1" ] || return 0
  { [ -n "${4:-}" ] && echo "===== $4"; tail -n "$3" "$1" | cut -c1-2000; } >> "$2"
}

finish() {
  local rc=$?
  trap - EXIT INT TERM
  log "finishing (rc=$rc)"
  if [ -x "$FLEETBENCH_BIN/controllerctl" ] && [ ! -s "$OUT/fleetbench.json" ]; then
    timeout 30 "${CTL[@]}" results --dir "$WORK/results" --format json > "$OUT/fleetbench.json" 2>> "$LOG" || true
  fi
  local i
  for (( i=${#PIDS[@]}-1; i>=0; i-- )); do
    kill -TERM -- "-${PIDS[$i]}" 2>/dev/null
  done
  sleep 2
  for (( i=${#PIDS[@]}-1; i>=0; i-- )); do
    kill -KILL -- "-${PIDS[$i]}" 2>/dev/null
  done
  : > "$OUT/engine.log"; : > "$OUT/fleet.log"; : > "$OUT/guidellm.log"
  for f in "$WORK"/engine*.log; do tail_into "$f" "$OUT/engine.log" 150 "$(basename "$f")"; done
  tail_into "$WORK/controller.log" "$OUT/fleet.log" 100 controller.log
  tail_into "$WORK/agent.log" "$OUT/fleet.log" 300 agent.log
  for f in "$WORK"/sweeps/*.log; do tail_into "$f" "$OUT/fleet.log" 40 "$(basename "$f")"; done
  for f in "$WORK"/guidellm/*.log; do tail_into "$f" "$OUT/guidellm.log" 60 "$(basename "$f")"; done
  # The engine events the results keep (start failures and crashes carry the engine's last
  # log lines: the agent's own engine logs nowhere else).
  "$PYTHON" - "$WORK/results" >> "$OUT/fleet.log" 2>&1 <<'EOF3' || true
import glob, json, sys
import pyarrow.parquet as pq
for f in sorted(glob.glob(sys.argv[1] + "/**/*.points.parquet", recursive=True)):
    events = (pq.read_metadata(f).metadata or {}).get(b"fleetbench.engine_events")
    for e in json.loads(events or b"[]"):
        print("===== engine event", e.get("point_id"), e.get("kind"), e.get("message"))
        for line in (e.get("log_tail") or [])[-80:]:
            print("    ", line[:300])
EOF3
  if [ -f "$ROOT/tests/gpu/compare.py" ]; then
    "$PYTHON" "$ROOT/tests/gpu/compare.py" --out "$OUT" --guidellm-dir "$WORK/guidellm" \
      --gpu "${GPU_NAME:-unknown}" --batches "$BATCHES" >> "$LOG" 2>&1 || log "compare.py failed"
    [ -f "$OUT/table.md" ] && cat "$OUT/table.md"
  fi
  log "done in $(( $(date +%s) - T0 ))s; files: $(cd "$OUT" && ls | tr '\n' ' ')"
  exit "$rc"
}
trap finish EXIT
trap 'exit 130' INT TERM

start_bg() { # start_bg LOGFILE CMD...: new session (own process group), pid in $BG_PID
  local logf=$1; shift
  setsid "$@" > "$logf" 2>&1 < /dev/null &
  BG_PID=$!
  PIDS+=("$BG_PID")
}

# ---- 1. wheels
if [ -d "$WHEELS" ] && ls "$WHEELS"/*.whl > /dev/null 2>&1; then
  log "installing $(ls "$WHEELS"/*.whl | wc -l) wheels to /tmp/site"
  "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site "$WHEELS"/*.whl >> "$LOG" 2>&1 || { log "wheel install failed"; exit 1; }
  export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
"$PYTHON" - >> "$LOG" 2>&1 <<'EOF'
import sys, importlib
print("python", sys.version.split()[0])
for m in ("torch", "transformers", "fastapi", "uvicorn", "pydantic", "openai", "guidellm", "datasets"):
    try:
        mod = importlib.import_module(m); print(m, getattr(mod, "__version__", "?"))
    except Exception as e:
        print(m, "MISSING", repr(e)[:200])
import torch
print("cuda", torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else "")
EOF

# ---- 2. inventory
GPU_NAME=cpu
if command -v nvidia-smi > /dev/null 2>&1; then
  { echo "== nvidia-smi"; nvidia-smi --query-gpu=index,name,memory.total,driver_version,clocks.max.sm --format=csv 2>&1; } >> "$LOG"
  GPU_NAME=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1)
fi
log "GPU: $GPU_NAME; batches: $BATCHES; ${INPUT_TOKENS} in / ${OUTPUT_TOKENS} out; $ENDPOINT; runtime $RUNTIME"
for b in controller agent controllerctl; do
  [ -x "$FLEETBENCH_BIN/$b" ] || { log "missing $FLEETBENCH_BIN/$b"; exit 1; }
done
"$FLEETBENCH_BIN/controllerctl" --version >> "$LOG" 2>&1

# ---- 3. model
if [ -f "$MODEL_DIR/config.json" ]; then
  log "model: reusing $MODEL_DIR"
else
  log "model: $GPU_MODEL_SCRIPT $MODEL_DIR"
  timeout 300 "$PYTHON" "$GPU_MODEL_SCRIPT" "$MODEL_DIR" >> "$LOG" 2>&1 || { log "model script failed"; exit 1; }
fi

# ---- GuideLLM's prompt length. fleetbench sizes the whole templated chat prompt to
# INPUT_TOKENS (the server's usage.prompt_tokens equals it); GuideLLM sizes the message text
# and the chat template (SmolLM2's adds a ~30-token system prompt) comes on top. With
# GUIDELLM_MATCH_PROMPT=1 (default) GuideLLM's text is shorter by the template's tokens so
# both tools send prompts of the same length; 0 sends INPUT_TOKENS of text.
GL_PROMPT_TOKENS=$INPUT_TOKENS
if [ "$ENDPOINT" = chat ] && [ "${GUIDELLM_MATCH_PROMPT:-1}" = 1 ]; then
  overhead=$("$PYTHON" - "$MODEL_DIR" 2>> "$LOG" <<'EOF2'
import sys
from transformers import AutoTokenizer
t = AutoTokenizer.from_pretrained(sys.argv[1])
ids = t.apply_chat_template([{"role": "user", "content": ""}], add_generation_prompt=True, tokenize=True)
if hasattr(ids, "keys"):
    ids = ids["input_ids"]
print(len(ids))
EOF2
)
  if [ -n "$overhead" ] && [ "$overhead" -lt "$INPUT_TOKENS" ]; then
    GL_PROMPT_TOKENS=$(( INPUT_TOKENS - overhead ))
  fi
  log "chat template: $overhead tokens; GuideLLM prompt_tokens=$GL_PROMPT_TOKENS"
fi

# ---- engine (the command line the agent's process runtime uses, plus SERVE_ARGS)
# SERVE_ARGS go right after `serve`, where the agent's [engine_commands] has them too, so
# both runtimes run the same command line. On a machine without a GPU the continuous-batching
# cache would take most of the host's RAM (seen: 19 GB for a 6 M-parameter model, then the
# OOM killer): cap it there.
if [ -z "$SERVE_ARGS" ] && [ "$GPU_NAME" = cpu ]; then SERVE_ARGS="--cb-max-memory-percent 0.05"; fi
SERVE_CMD=("$PYTHON" -m transformers.cli.transformers serve)
ENGINE_URL=http://127.0.0.1:$ENGINE_PORT
ENGINE_N=0
engine_start() {
  ENGINE_N=$((ENGINE_N + 1))
  local elog=$WORK/engine$ENGINE_N.log
  # shellcheck disable=SC2086
  log "engine: ${SERVE_CMD[*]} $SERVE_ARGS $MODEL_DIR --continuous-batching --host 127.0.0.1 --port $ENGINE_PORT"
  start_bg "$elog" "${SERVE_CMD[@]}" $SERVE_ARGS "$MODEL_DIR" --continuous-batching --host 127.0.0.1 \
    --port "$ENGINE_PORT"
  ENGINE_PID=$BG_PID
  local t=$(( $(date +%s) + ENGINE_START_TIMEOUT_S ))
  until http_ok "$ENGINE_URL/health" > /dev/null 2>&1; do
    if ! kill -0 "$ENGINE_PID" 2>/dev/null; then log "engine exited"; tail -n 30 "$elog" >&2; return 1; fi
    if [ "$(date +%s)" -gt "$t" ]; then log "engine not healthy in ${ENGINE_START_TIMEOUT_S}s"; return 1; fi
    sleep 1
  done
  log "engine healthy; first request (the continuous-batching manager starts on it)"
  local body
  body=$(printf '{"model":"%s","messages":[{"role":"user","content":"hello"}],"max_tokens":4}' "$MODEL_DIR")
  if ! http_ok "$ENGINE_URL/v1/chat/completions" "$body" "$ENGINE_START_TIMEOUT_S" >> "$LOG"; then
    log "first request failed"; return 1
  fi
  echo >> "$LOG"
  log "engine ready"
}
engine_stop() {
  [ -n "$ENGINE_PID" ] || return 0
  kill -TERM -- "-$ENGINE_PID" 2>/dev/null
  for _ in $(seq 1 20); do kill -0 "$ENGINE_PID" 2>/dev/null || break; sleep 0.5; done
  kill -KILL -- "-$ENGINE_PID" 2>/dev/null
  ENGINE_PID=""
  sleep 1
}

# ---- 4. controller + agent
start_bg "$WORK/controller.log" "$FLEETBENCH_BIN/controller" --listen "127.0.0.1:$CTRL_PORT" \
  --results "$WORK/results" --state-dir "$WORK/state"
TRANSFORMERS_CMD=$(printf '"%s", "-m", "transformers.cli.transformers", "serve"' "$PYTHON")
for a in $SERVE_ARGS; do TRANSFORMERS_CMD+=$(printf ', "%s"' "$a"); done
sed -e "s|@CTRL_PORT@|$CTRL_PORT|" -e "s|@WORK@|$WORK|" -e "s|@TRANSFORMERS_CMD@|$TRANSFORMERS_CMD|" \
    -e "s|@PYTHONPATH@|${PYTHONPATH:-}|" tests/gpu/agent.toml > "$WORK/agent.toml"
for _ in $(seq 1 50); do
  "${CTL[@]}" agents > /dev/null 2>&1 && break
  sleep 0.2
done
start_bg "$WORK/agent.log" "$FLEETBENCH_BIN/agent" --config "$WORK/agent.toml"
for _ in $(seq 1 50); do
  "${CTL[@]}" agents 2>/dev/null | grep -q gpu-kit && break
  sleep 0.2
done
"${CTL[@]}" agents >> "$LOG" 2>&1 || { log "controller/agent not up"; exit 1; }

requests_for() { local r=$(( WAVES * $1 )); [ "$r" -lt "$MIN_REQUESTS" ] && r=$MIN_REQUESTS; echo "$r"; }
step_timeout() { # step_timeout CAP: min(CAP, time left − reserve)
  local l=$(( $(left) - RESERVE_S )); [ "$l" -lt "$1" ] && echo "$l" || echo "$1"
}

fleet_point() { # fleet_point C[,C…] [TIMEOUT_CAP_S]: one sweep over these batch sizes
  local c=$1 r t sweep url_line
  c=${c// /,}
  t=$(step_timeout "${2:-300}")
  if [ "$t" -lt 15 ]; then log "fleetbench c=$c: skipped, ${t}s left"; return 1; fi
  if [ "$RUNTIME" = external ]; then url_line="url = \"$ENGINE_URL\""; else url_line=""; fi
  sweep=$WORK/sweeps/c${c//,/_}.toml
  sed -e "s|@NAME@|gpu-kit-c${c//,/_}|" -e "s|@MODEL@|$MODEL_DIR|" -e "s|@RUNTIME@|$RUNTIME|" \
      -e "s|@URL_LINE@|$url_line|" -e "s|@BATCHES@|$c|" -e "s|@INPUT@|$INPUT_TOKENS|" \
      -e "s|@OUTPUT@|$OUTPUT_TOKENS|" -e "s|@WAVES@|$WAVES|" -e "s|@POINT_TIMEOUT@|$t|" \
      -e "s|@ENDPOINT@|$ENDPOINT|" -e "s|@MAX_WAVES@|$WARMUP_MAX_WAVES|" -e "s|@TOLERANCE@|$WARMUP_TOLERANCE|" \
      tests/gpu/sweep.toml > "$sweep"
  local slog=$WORK/sweeps/c${c//,/_}.log
  log "fleetbench c=$c: $WAVES bursts per point, warm-up ≤ $WARMUP_MAX_WAVES waves, timeout ${t}s"
  timeout "$t" "${CTL[@]}" submit "$sweep" --watch > "$slog" 2>&1
  r=$?
  log "fleetbench c=$c: exit $r ($(grep -m1 -o 'gpu-kit-c[0-9_]*-[A-Za-z0-9_-]*' "$slog" || echo '?'))"
  if [ "$r" = 124 ]; then
    local id
    id=$(grep -m1 -o 'gpu-kit-c[0-9_]*-[A-Za-z0-9_-]*' "$slog")
    [ -n "$id" ] && timeout 20 "${CTL[@]}" cancel "$id" >> "$LOG" 2>&1
    sleep 3
  fi
  return 0
}

guidellm_point() { # guidellm_point C
  local c=$1 n w t r backend fmt=/v1/chat/completions
  [ "$ENDPOINT" = completions ] && fmt=/v1/completions
  n=$(requests_for "$c")
  w=$c; [ "$w" -gt "$GUIDELLM_WARMUP_MAX" ] && w=$GUIDELLM_WARMUP_MAX
  t=$(step_timeout 300)
  if [ "$t" -lt 15 ]; then log "guidellm c=$c: skipped, ${t}s left"; return 1; fi
  # transformers serve 5.17: ignore_eos → 422; max_completion_tokens and stream_options are
  # ignored (output would run to the default length): null removes a key (GuideLLM drops
  # None values from the body), max_tokens sets the length.
  backend=$(printf '{"kind":"openai_http","target":"%s","model":"%s","request_format":"%s","extras":{"body":{"ignore_eos":null,"max_completion_tokens":null,"stream_options":null,"stop":null,"max_tokens":%s}}}' \
    "$ENGINE_URL" "$MODEL_DIR" "$fmt" "$OUTPUT_TOKENS")
  log "guidellm c=$c: $n measured + $w warm-up requests, timeout ${t}s"
  timeout "$t" "$PYTHON" -m guidellm run \
    --backend "$backend" \
    --profile "{\"kind\":\"concurrent\",\"streams\":[$c],\"warmup\":{\"mode\":\"requests\",\"value\":$w}}" \
    --constraint "{\"kind\":\"max_requests\",\"count\":$(( n + w ))}" \
    --tokenizer "{\"kind\":\"hf_auto\",\"model\":\"$MODEL_DIR\"}" \
    --data "{\"kind\":\"synthetic_text\",\"prompt_tokens\":$GL_PROMPT_TOKENS,\"output_tokens\":$OUTPUT_TOKENS}" \
    --output "{\"kind\":\"json\",\"path\":\"$WORK/guidellm/c$c.json\"}" \
    --disable-console-interactive > "$WORK/guidellm/c$c.log" 2>&1
  r=$?
  log "guidellm c=$c: exit $r"
}

# ---- 5. measure
if [ "$RUNTIME" = external ]; then
  engine_start || exit 1
  for c in $BATCHES; do
    fleet_point "$c" || break
    guidellm_point "$c" || break
  done
else
  fleet_point "$BATCHES" $(( DEADLINE_S * 6 / 10 ))
  engine_start || exit 1
  for c in $BATCHES; do guidellm_point "$c" || break; done
fi

timeout 30 "${CTL[@]}" results --dir "$WORK/results" --format json > "$OUT/fleetbench.json" 2>> "$LOG"
log "fleetbench results: $(grep -c '"point_id"' "$OUT/fleetbench.json" 2>/dev/null || echo 0) points"
