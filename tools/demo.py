#!/usr/bin/env python
"""Draw a trained SE detector's detections on images.

    python tools/demo.py --config-file output/demo/config.yaml \
        --input datasets/se_synthetic/val --output output/demo/predictions \
        --opts MODEL.WEIGHTS output/demo/model_final.pth

Writes one PNG per image (boxes, class names, scores; Detectron2's Visualizer) and
detections.json to --output.
"""

import argparse
import sys

from se_detectron.data import DatasetConfigError, register_datasets_from_cfg
from se_detectron.engine.predict import list_images, predict_images
from se_detectron.model_zoo import get_se_cfg


def get_parser():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config-file", required=True, help="the model's config file")
    parser.add_argument("--input", nargs="+", required=True, help="image files and/or folders")
    parser.add_argument("--output", required=True, help="folder for pictures + detections.json")
    parser.add_argument("--max-images", type=int, default=0, help="only the first N images")
    parser.add_argument("--confidence-threshold", type=float, default=0.5)
    parser.add_argument("--opts", nargs=argparse.REMAINDER, default=[], help="KEY VALUE pairs")
    return parser


def main(argv=None):
    args = get_parser().parse_args(argv)
    try:
        cfg = get_se_cfg(args.config_file, args.opts)
        if not cfg.MODEL.WEIGHTS:
            sys.exit("error: no weights to run: pass --opts MODEL.WEIGHTS path/to/model.pth")
        cfg.freeze()
        register_datasets_from_cfg(cfg)
        images = list_images(args.input)
        if args.max_images > 0:
            images = images[: args.max_images]
        results = predict_images(cfg, images, args.output, args.confidence_threshold)
    except (FileNotFoundError, DatasetConfigError) as e:
        sys.exit(f"error: {e}")
    n = sum(len(r["detections"]) for r in results)
    print(f"{len(results)} images, {n} detections -> {args.output}/ (detections.json, *.png)")


if __name__ == "__main__":
    main()
