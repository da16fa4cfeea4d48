#!/usr/bin/env bash
# Side by side on one GPU: the shapes32 hdae_u training loop eager, then under torch.compile.
# Each run's metrics.csv (img_s per 50 steps) lands in $OUT/<mode>/.  The first 50 steps include
# rendering the data set into GPU memory and, compiled, about 2 minutes of compilation (H100 machine).
set -u
OUT=${OUT:-/tmp/hdae_probe}; export PYTHONPATH=.${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
run() {  # name, minutes, extra args
  python3 -m hdae_core.cli train --preset shapes32 --variant hdae_u --steps 1000000 --batch 256 --lr 3e-4 \
    --ema-decay 0.999 --log-every 50 --eval-every 0 --ckpt-every 1000000 --max-minutes "$2" --workers 8 \
    --no-progress --out "$OUT/$1" "${@:3}" 2>&1 | tail -4
}
run eager "${MIN_EAGER:-1.5}"
run compiled "${MIN_COMPILE:-4}" --compile
for m in eager compiled; do echo "== $m"; cut -d, -f1,2,3,5 "$OUT/$m/metrics.csv" | tail -4; done
