#!/usr/bin/env bash
# GPU speed in about 100 s: `hdae bench` at PRESET (bf16 autocast, channels-last) for each variant,
# and DiffAE's own network (the speed peer) at the same size, batch, precision and timing, run from
# $PEERS as a separate process. One JSON line per measurement in $OUT/speed.jsonl; stderr in
# $OUT/speed.log. Run from the repository root with a python3 that has torch with CUDA:
#   PYTHONPATH=. OUT=/tmp/out PEERS=.peers bash benchmarks/gpu_speed.sh
# Environment (defaults in brackets):
#   OUT [/tmp/hdae_speed]  PEERS [.peers] (a copy of ../shared/peers: bench_diffae.py + diffae/)
#   PRESET [ffhq128]  BATCH [64]  STEPS [4] timed steps after 2 warm-up steps, mean (as the peer)
#   VARIANTS ["dae hdae_u"]  AMP [bf16] (bf16 | none)  DDIM [none] DDIM steps for the sampler
#   overhead, e.g. 20 (each new batch size costs cuDNN autotuning time)  LIMIT [28] seconds per measurement  DEVICE [cuda] (cpu: a dry run)
set -u
OUT=${OUT:-/tmp/hdae_speed}; PEERS=${PEERS:-.peers}; PRESET=${PRESET:-ffhq128}
BATCH=${BATCH:-64}; STEPS=${STEPS:-4}; VARIANTS=${VARIANTS:-"dae hdae_u"}; AMP=${AMP:-bf16}
DDIM=${DDIM:-none}; LIMIT=${LIMIT:-28}; DEVICE=${DEVICE:-cuda}; PY=${PY:-python3}
export PYTHONPATH=.${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
mkdir -p "$OUT"
J=$OUT/speed.jsonl; LOG=$OUT/speed.log
start=$(date +%s)

# the machine, and the peer's architecture read from the preset
timeout 15 "$PY" - "$PRESET" "$DEVICE" >>"$J" 2>>"$LOG" <<'EOF'
import json, sys
import torch
from hdae_core.config import ModelConfig
c = ModelConfig.preset(sys.argv[1])
info = {"machine": True, "torch": torch.__version__, "cuda": torch.cuda.is_available(), "preset": sys.argv[1],
        "peer_env": {"SIZE": c.image_size, "CH": c.model_channels, "MULT": ",".join(map(str, c.channel_mult)),
                     "ENC_MULT": ",".join(map(str, c.enc_channel_mult))}}
if sys.argv[2] == "cuda" and torch.cuda.is_available():
    info["gpu"] = torch.cuda.get_device_name(0)
print(json.dumps(info))
EOF
peer_env=$("$PY" -c "import json,sys; d=[json.loads(l) for l in open(sys.argv[1]) if '\"machine\"' in l][-1]['peer_env']; print(' '.join(f'{k}={v}' for k, v in d.items()))" "$J" 2>>"$LOG")

ours() {  # variant
  timeout "$LIMIT" "$PY" -m hdae_core.cli bench --preset "$PRESET" --variant "$1" --batch "$BATCH" --json \
    --device "$DEVICE" --amp "$AMP" --channels-last on --repeats "$STEPS" --warmup 2 --timing mean \
    --ddim-steps "$DDIM" --no-flops >>"$J" 2>>"$LOG" || echo "{\"variant\": \"$1\", \"failed\": $?}" >>"$J"
}

peer() {
  if [ ! -f "$PEERS/bench_diffae.py" ]; then echo "{\"peer\": \"diffae\", \"failed\": \"no $PEERS/bench_diffae.py\"}" >>"$J"; return; fi
  if [ -z "$peer_env" ]; then echo "{\"peer\": \"diffae\", \"failed\": \"preset $PRESET not read\"}" >>"$J"; return; fi
  # the peer's own benchmark script, unchanged, in its own process: on the GPU by default device, under
  # the same autocast, and with its clock synchronised (its timer does not wait for queued CUDA work)
  env $peer_env BATCH="$BATCH" STEPS="$STEPS" AMP="$AMP" DEVICE="$DEVICE" timeout "$LIMIT" "$PY" - "$PEERS/bench_diffae.py" >>"$J" 2>>"$LOG" <<'EOF' || echo "{\"peer\": \"diffae\", \"failed\": $?}" >>"$J"
import contextlib, io, json, os, runpy, sys, time
import torch
dev = os.environ["DEVICE"] if torch.cuda.is_available() else "cpu"
dtype = {"bf16": torch.bfloat16, "none": None}[os.environ["AMP"]]
if dev == "cuda":
    torch.set_default_device("cuda")
    torch.backends.cudnn.benchmark = True
    _clock = time.perf_counter
    def synced():
        torch.cuda.synchronize()
        return _clock()
    time.perf_counter = synced
buf = io.StringIO()
with contextlib.redirect_stdout(buf), torch.autocast(dev, dtype=dtype or torch.float32, enabled=dtype is not None):
    runpy.run_path(sys.argv[1], run_name="__main__")
line = json.loads(buf.getvalue().strip().splitlines()[-1])
line.update(device=dev, dtype="bf16" if dtype else "fp32", timing=f"mean of {os.environ['STEPS']} after 2")
if dev == "cuda":
    line.update(gpu=torch.cuda.get_device_name(0), cuda_max_allocated_mb=torch.cuda.max_memory_allocated() / 2**20)
print(json.dumps(line))
EOF
}

set -- $VARIANTS
ours "$1"; shift
peer
for v in "$@"; do ours "$v"; done
echo "{\"done\": true, \"seconds\": $(( $(date +%s) - start ))}" >>"$J"
cat "$J"
