#!/bin/bash
# Commands behind bench/README.md's "The epoch permutation off the training thread, and where 4 GPUs lose".
# launch.backend=host (no Docker on the GPU machines); wheels for hydra/omegaconf/pydantic/docker installed
# into /tmp/site first (PYTHONPATH=/tmp/site:$PWD); D: a directory holding the Fashion-MNIST IDX files.
D=${D:-/usr/share/datasets/fashion-mnist}

# nvidia-h100-x4
# 1. all-reduce alone (allreduce.jsonl)
for p in strict fast; do for g in 4 2; do python3 bench/allreduce.py --gpus $g --profile $p --mb 12.9 0.3; done; done
# 2. timelines (trace_gaps.txt): 4 GPUs at 8192 per rank, and one GPU at 8192
r() {  # name gpus profile precision per-rank-batch
  python3 -m runner experiment=mnist_ddp launch.backend=host "launch.gpus=[$2]" determinism=$3 precision=$4 \
    dataset.root=$D trainer.max_steps=30 trainer.max_epochs=-1 model.batch_size=$5 model.channels=64 model.hidden=512 \
    determinism.audit=false experiment.target=bench.profile_target:train +profile.workload=mnist_ddp \
    +profile.start=20 +profile.steps=8 +profile.trace=true hydra.run.dir=/tmp/r/$1
  python3 bench/trace_gaps.py /tmp/r/$1/outputs --steps 8
}
r g4-strict-bf16 0,1,2,3 strict bf16 8192; r g4-fast-bf16 0,1,2,3 fast bf16 8192; r g4-strict-tf32 0,1,2,3 strict tf32 8192
r g1-strict-bf16-8192 0 strict bf16 8192; r g1-fast-bf16-8192 1 fast bf16 8192
# 3. the sweep with the permutation made on the helper thread (../gpu_h100x4_perm.json)
python3 bench/gpu_determinism.py --gpus 1 2 4 --workloads mnist_ddp --precisions tf32 bf16 --parallel 4 \
  --out bench/results/gpu_h100x4_perm.json --data-root $D

# nvidia-h100-x2: fp32 (../gpu_h100x2_fp32.json)
python3 bench/gpu_determinism.py --gpus 1 2 --workloads mnist_ddp --precisions fp32 --parallel 2 \
  --out bench/results/gpu_h100x2_fp32.json --data-root $D

# nvidia-h100-x1: cuDNN's algorithm choice (../layout_h100/cudnn_selection.jsonl)
L="--out cudnn_selection.jsonl --layouts nchw"
for bs in 1.0 0.5; do w=$([ $bs = 0.5 ] && echo "--workloads mnist_ddp")
  python3 bench/conv_layout.py $L --label default --batch-scale $bs --steps 20 $w
  TORCH_CUDNN_USE_HEURISTIC_MODE_B=1 python3 bench/conv_layout.py $L --label modeb --batch-scale $bs --steps 20 $w
done
# one process per line: cuDNN's plan cache would carry one mode's choice into the next mode's runs
run() { python3 bench/conv_layout.py $L --steps 15 --warmup 5 "$@"; }
run --label t1 --modes tuned; run --label t2 --modes tuned; run --label s --modes strict; run --label f --modes fast
H="--batch-scale 0.5 --workloads mnist_ddp"
run --label h1 --modes tuned $H; run --label h2 --modes tuned $H; run --label hs --modes strict fast $H
