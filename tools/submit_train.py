#!/usr/bin/env python
"""Submit tools/train_net.py (or, with --lazy, tools/lazy_train_net.py) to SLURM with submitit.

    python tools/submit_train.py --nodes 2 --gpus-per-node 8 --partition PARTITION \
        --config-file COCO-Detection/faster_rcnn_SE_R_50_FPN_1x.yaml OUTPUT_DIR /shared/se_r50

A preempted or timed-out job saves after its current iteration and is requeued; it continues
exactly (docs/tutorials/distributed.md). See ``python tools/submit_train.py -h`` and
se_detectron/engine/submit.py.
"""

from se_detectron.engine.submit import cli

if __name__ == "__main__":
    cli()
