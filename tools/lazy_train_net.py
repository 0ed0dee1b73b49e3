#!/usr/bin/env python
"""Train or evaluate a LazyConfig (python config) detector with an SE backbone.

    python tools/lazy_train_net.py --config-file Synthetic/mask_rcnn_SE_R_18_FPN_synthetic.py
    python tools/lazy_train_net.py --config-file CONFIG --resume
    python tools/lazy_train_net.py --config-file CONFIG --eval-only train.init_checkpoint=W.pth

See ``python tools/lazy_train_net.py -h``, docs/tutorials/lazyconfig.md and
se_detectron/engine/lazy_train_net.py.
"""

from se_detectron.engine.lazy_train_net import cli

if __name__ == "__main__":
    cli()
