#!/bin/bash
# 2-GPU machine: per-rank batch efficiency on 1 GPU, channels_last on the runner, NCCL env check, DDP/NCCL variants
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .h7/.whl/*.whl || exit 1
D=$PWD/.h7/data; cd .h7g1/src && git init -q . && git config user.email x@y && git config user.name x
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
# exploration only (this copy): DDPStrategy kwargs from G1_DDP (JSON)
sed -i 's/DDPStrategy(process_group_backend=backend)/DDPStrategy(process_group_backend=backend, **__import__("json").loads(__import__("os").environ.get("G1_DDP") or "{}"))/' runner/worker/context.py
grep -c G1_DDP runner/worker/context.py
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
R=/tmp/r; mkdir -p $R
r() {  # name gpus workload profile precision global_batch steps [overrides]
  local name=$1 gpus=$2 w=$3 p=$4 q=$5 b=$6 s=$7; shift 7
  local m="model.channels=64 model.hidden=512"; [ "$w" = resnet_small ] && m="model.channels=32 model.hidden=128"
  local n=$(echo "$gpus" | tr ',' '\n' | wc -l)
  timeout 120 python3 -m runner experiment=$w launch.backend=host "launch.gpus=[$gpus]" determinism=$p precision=$q \
    dataset.root=$D trainer.max_steps=$s trainer.max_epochs=-1 model.batch_size=$((b / n)) $m "$@" \
    hydra.run.dir=$R/$name > $R/$name.log 2>&1
  python3 - $R/$name $name <<'PY'
import json, sys
try:
    m = json.load(open(sys.argv[1] + "/manifest.json"))
    print(json.dumps({"run": sys.argv[2], "sps": round(m["metrics"].get("samples_per_s") or 0),
        "w": (m["outputs"].get("model.pt") or {}).get("sha256", "")[:12], "fp": ((m.get("fingerprints") or {}).get("sha256") or "")[:12]}))
except Exception as e:
    print(json.dumps({"run": sys.argv[2], "error": repr(e)}))
PY
}
S=80
echo "== A: 1 GPU, global batch 32768 vs the 2-GPU per-rank batch 16384; resnet NHWC/NCHW"
for pq in strict/tf32 fast/tf32 strict/bf16 fast/bf16 strict/fp32; do p=${pq%/*}; q=${pq#*/}
  r a-$p-$q-b32k 0 mnist_ddp $p $q 32768 $S & r a-$p-$q-b16k 1 mnist_ddp $p $q 16384 $S & wait
done 2>&1 | tee $OUT/a.jsonl
for q in tf32 bf16; do
  r cl-strict-$q-nhwc 0 resnet_small strict $q 8192 $S model.channels_last=true & r cl-fast-$q-nhwc 1 resnet_small fast $q 8192 $S model.channels_last=true & wait
done 2>&1 | tee -a $OUT/a.jsonl
echo "== B: NCCL variables as the ranks see them"
export NCCL_DEBUG=INFO NCCL_DEBUG_SUBSYS=INIT,ENV,TUNING,COLL NCCL_DEBUG_FILE=/tmp/nccl.%h.%p
r b-strict-tf32 0,1 mnist_ddp strict tf32 32768 20 "launch.env_passthrough=[NCCL_DEBUG,NCCL_DEBUG_SUBSYS,NCCL_DEBUG_FILE]"
unset NCCL_DEBUG NCCL_DEBUG_SUBSYS NCCL_DEBUG_FILE
cat /tmp/nccl.* | grep -iv "opCount [1-9]" | head -150 > $OUT/nccl_info.txt; grep -ih "proto\|algo\|set by env" /tmp/nccl.* | sort | uniq -c | sort -rn | head -30
echo "== C: 2-GPU variants"
export G1_DDP
P="launch.env_passthrough=[G1_DDP]"
for q in tf32 bf16; do
  G1_DDP=''; r c-fast-$q 0,1 mnist_ddp fast $q 32768 $S $P
  for rep in 0; do
  G1_DDP=''; r c-strict-$q-base-$rep 0,1 mnist_ddp strict $q 32768 $S $P
  G1_DDP='{"gradient_as_bucket_view": true}'; r c-strict-$q-gabv-$rep 0,1 mnist_ddp strict $q 32768 $S $P
  G1_DDP='{"static_graph": true}'; r c-strict-$q-static-$rep 0,1 mnist_ddp strict $q 32768 $S $P
  G1_DDP='{"bucket_cap_mb": 100}'; r c-strict-$q-bucket100-$rep 0,1 mnist_ddp strict $q 32768 $S $P
  G1_DDP=''; r c-strict-$q-LL-$rep 0,1 mnist_ddp strict $q 32768 $S $P determinism.nccl.NCCL_PROTO=LL
  G1_DDP=''; r c-strict-$q-LL128-$rep 0,1 mnist_ddp strict $q 32768 $S $P determinism.nccl.NCCL_PROTO=LL128
  done
done 2>&1 | tee $OUT/c.jsonl

# ---- the profiles (profile_*.txt): .h7/x2prof.sh
# where a 2-GPU strict step's time goes (tf32, bf16), against one GPU at the same per-rank batch (16384)
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .h7/.whl/*.whl || exit 1
D=$PWD/.h7/data; cd .h7g1/src && git init -q . && git config user.email x@y && git config user.name x && git add -A && git commit -qm snap
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
prof() {  # name gpus precision per-rank-batch
  timeout 150 python3 -m runner experiment=mnist_ddp experiment.target=bench.profile_target:train +profile.workload=mnist_ddp \
    +profile.start=20 +profile.steps=10 launch.backend=host "launch.gpus=[$2]" determinism=strict precision=$3 \
    dataset.root=$D trainer.max_steps=32 trainer.max_epochs=-1 model.batch_size=$4 model.channels=64 model.hidden=512 \
    determinism.audit=false hydra.run.dir=/tmp/prof/$1 > /tmp/prof-$1.log 2>&1 || { echo "FAILED $1"; tail -5 /tmp/prof-$1.log; }
}
prof g2-tf32 0,1 tf32 16384; prof g2-bf16 0,1 bf16 16384
prof g1-tf32-b16k 0 tf32 16384 & prof g1-bf16-b16k 1 bf16 16384 & wait
for n in g2-tf32 g2-bf16 g1-tf32-b16k g1-bf16-b16k; do cut -c1-200 /tmp/prof/$n/outputs/profile-rank0.txt > $OUT/profile_$n.txt; done
grep -H "ms/step" /tmp/prof/*/outputs/profile-rank*.txt
