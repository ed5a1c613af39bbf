#!/bin/bash
# Where strict's extra wall time goes at issue 11's size (mnist_ddp, global batch 32768, channels 64,
# hidden 512, 100 steps, one GPU, host backend): strict with the audit, fast, strict without the
# audit, and strict without the audit on 16 CPU threads, alternating, REPS rounds. One JSON line a
# run in $OUT/audit_split-$PRECISION.jsonl: wall seconds, the manifest's timings, samples/s.
#
#   DATA=/path/to/fashion-mnist OUT=/tmp/out REPS=3 PRECISION=bf16 bash bench/gpu_audit_split.sh
set -u
: "${DATA:?DATA: the data folder}" "${OUT:?OUT: where the results go}"
REPS=${REPS:-3}
PRECISION=${PRECISION:-bf16}
common=(launch.backend=host experiment=mnist_ddp "launch.gpus=[0]" trainer.max_epochs=-1 "dataset.root=$DATA"
  trainer.max_steps=100 "precision=$PRECISION" model.batch_size=32768 model.channels=64 model.hidden=512)
variants=("determinism=strict" "determinism=fast" "determinism=strict determinism.audit=false"
  "determinism=strict determinism.audit=false determinism.threads=16")
python3 -m runner "${common[@]}" determinism=fast trainer.max_steps=5 hydra.run.dir=/tmp/warm-up >/dev/null 2>&1
for rep in $(seq "$REPS"); do
  for v in "${variants[@]}"; do
    dir=/tmp/split-$rep-${v//[ =.]/_}
    start=$(date +%s.%N)
    # shellcheck disable=SC2086  # $v holds several overrides
    python3 -m runner "${common[@]}" $v "hydra.run.dir=$dir" >"$dir.log" 2>&1
    code=$?
    end=$(date +%s.%N)
    python3 - "$dir" "$v" "$start" "$end" "$code" <<'PY' | tee -a "$OUT/audit_split-$PRECISION.jsonl"
import json, sys
d, v, start, end, code = sys.argv[1:]
wall = float(end) - float(start)
m = json.load(open(d + "/manifest.json")) if code == "0" else {}
print(json.dumps({"variant": v, "exit_code": int(code), "wall_seconds": round(float(wall), 2),
                  "timings": m.get("timings"), "samples_per_s": (m.get("metrics") or {}).get("samples_per_s")}))
PY
  done
done
