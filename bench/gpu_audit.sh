#!/bin/bash
# The determinism audit's cost on one GPU (issue 23; bench/README.md "What the determinism audit
# costs"): the fingerprint's GPU tests, then `bench.audit_cost` (strict and fast alternating, 100
# steps of mnist_ddp, host backend) at the default config and at issue 11's size (global batch
# 32768, channels 64, hidden 512), bf16 and tf32. One JSON per setting in $OUT.
#
#   DATA=/path/to/fashion-mnist OUT=/tmp/out REPS=3 bash bench/gpu_audit.sh default large
#
# On the lent GPU machines, with the wheels installed as bench/results/ddp_h100x2/commands.sh does.
set -u
: "${DATA:?DATA: the data folder}" "${OUT:?OUT: where the JSONs go}"
REPS=${REPS:-3}
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
python3 -c "import torch, pytorch_lightning as pl; print('torch', torch.__version__, 'lightning', pl.__version__)"
if python3 -c "import pytest" 2>/dev/null; then
  python3 -m pytest -q -p no:cacheprovider -m gpu tests/unit/test_units_output_digest.py 2>&1 | tail -3
else  # no pytest there: the same check, bare
  python3 - <<'PY'
import torch
from runner.worker.output_digest import fingerprint
for dt in (torch.bool, torch.uint8, torch.int16, torch.bfloat16, torch.float32, torch.float64, torch.complex64):
    for shape in ((), (3,), (5, 7), (64, 33), (1 << 20,)):
        x = (torch.randn(shape) * 20).to(dt)
        for chunk in (4, 1 << 22):
            assert int(fingerprint(x.cuda(), chunk=chunk)) == int(fingerprint(x, chunk=chunk)), (dt, shape)
print("GPU fingerprints equal the CPU's: ok")
PY
fi

common=(launch.backend=host experiment=mnist_ddp "launch.gpus=[0]" trainer.max_epochs=-1 "dataset.root=$DATA")
python3 -m runner "${common[@]}" determinism=fast trainer.max_steps=5 hydra.run.dir=/tmp/warm-up >/dev/null 2>&1
for size in "$@"; do
  extra=()
  [ "$size" = large ] && extra=(model.batch_size=32768 model.channels=64 model.hidden=512)
  for q in bf16 tf32; do
    echo "== $size $q"
    python3 -m bench.audit_cost --reps "$REPS" "${common[@]}" trainer.max_steps=100 precision=$q "${extra[@]}" \
      >"$OUT/audit_cost-h100-$size-$q.json" 2>"$OUT/audit_cost-h100-$size-$q.log"
    tail -n "$((2 * REPS))" "$OUT/audit_cost-h100-$size-$q.log"
    python3 -c "import json,sys; d=json.load(open(sys.argv[1])); print({k: d[k] for k in ('wall_ratio_strict_over_fast','audit_seconds','steady_speed_ratio_strict_over_fast','repeats_identical')})" "$OUT/audit_cost-h100-$size-$q.json"
  done
done
