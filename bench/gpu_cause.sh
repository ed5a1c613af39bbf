#!/bin/bash
# GPU evidence for naming a cause: the determinism audit on CUDA for probe operations, and
# `replay --locate` on two determinism=fast repeats of mnist_ddp. Runs on a GPU host without Docker
# (launch.backend=host). DATA: a Fashion-MNIST dir; OUT: where the logs go; WHEELS (optional): a
# folder of wheels for what the host's Python lacks (hydra-core, omegaconf, pydantic, docker).
#   DATA=/path/to/fashion-mnist OUT=/tmp/cause bash bench/gpu_cause.sh
set -u
OUT=${OUT:?set OUT}; DATA=${DATA:?set DATA}; mkdir -p "$OUT"
if [ -n "${WHEELS:-}" ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site "$WHEELS"/*.whl || exit 1
  export PYTHONPATH=/tmp/site
fi
export PYTHONUNBUFFERED=1
nvidia-smi -L | tee "$OUT/audit.log"
python3 -c "import torch; print('torch', torch.__version__, torch.version.cuda)" | tee -a "$OUT/audit.log"
for probe in model.probe=index_add model.probe=scatter_add model.probe=upsample model.probe=adaptive_pool model.put=true; do
  echo "=== $probe" >> "$OUT/audit.log"
  timeout 90 python3 -m runner.audit experiment=noisy launch.backend=host launch.gpus=1 "dataset.root=$DATA" \
    model.noise=0 "$probe" >> "$OUT/audit.log" 2>&1
  echo "exit $?" >> "$OUT/audit.log"
done
F="experiment=mnist_ddp determinism=fast launch.backend=host launch.gpus=1 dataset.root=$DATA trainer.max_steps=20
   trainer.max_epochs=-1 model.batch_size=32768 model.channels=64 model.hidden=512 fingerprints.every_k_steps=1"
for i in a b; do timeout 120 python3 -m runner $F "hydra.run.dir=/tmp/fast_$i" > "$OUT/fast_$i.log" 2>&1; done
timeout 60 python3 -m runner.diff /tmp/fast_a /tmp/fast_b > "$OUT/locate.log" 2>&1
timeout 240 python3 -m runner.replay /tmp/fast_a --locate >> "$OUT/locate.log" 2>&1
echo "locate exit $?" >> "$OUT/locate.log"
