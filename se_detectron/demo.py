"""``make demo``: the production path, end to end, on the bundled synthetic dataset.

A COCO user pretrains (or downloads) an ImageNet trunk, converts it, fine-tunes Faster R-CNN from
it with FrozenBN and ``FREEZE_AT 2``, and evaluates. Nothing can be downloaded here, so the demo
runs the same tools in the same order on data the package makes itself:

1. ``pretrain``: ``tools/pretrain_imagenet.py --data-path synthetic-crops``: an SE-ResNet-18
   classifier on object crops of the synthetic *train* split (its held-out accuracy is measured on
   crops of train images it never saw; the detection val split is never read);
2. ``convert``: ``tools/convert_pretrained.py`` turns its best checkpoint into a Detectron2 ``.pkl``
   (trunk names, the config the weights need);
3. ``finetune``: ``tools/train_net.py`` trains Faster R-CNN from it
   (``configs/Synthetic/faster_rcnn_SE_R_18_FPN_synthetic.yaml``: FrozenBN, ``FREEZE_AT 2``) and
   evaluates COCO box AP on ``se_synthetic_val`` at the end;
4. ``predict``: ``tools/predict.py`` draws the detections on validation pictures.

Each stage runs as its own process (the command is printed first, so it can be rerun by hand) and
shows its own progress; a stage whose outputs are complete is reused on the next run (``--rerun``
redoes a stage and those after it). An interrupted stage continues where it stopped (both training
tools resume). The summary (box AP, minutes per stage, detections per picture, where every output
is) is printed at the end and written to ``OUTPUT/summary.json``. A visible GPU is used by every
stage.
"""

import argparse
import json
import os
import re
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence

import yaml

from .config import get_config_file
from .data.synthetic import default_synthetic_root
from .errors import SEDetectronError
from .utils.atomic import atomic_write_json
from .utils.machine import cpu_name

__all__ = [
    "DEMO_CONFIG",
    "DEMO_PRETRAIN_ARGS",
    "STAGES",
    "DemoError",
    "DemoPlan",
    "MALLOC_TUNABLES",
    "cli",
    "format_summary",
    "run_demo",
    "stage_environment",
]

STAGES = ("pretrain", "convert", "finetune", "predict")
#: A config shipped in the package (``se_detectron/configs/``, also ``configs/`` in a checkout).
DEMO_CONFIG = "Synthetic/faster_rcnn_SE_R_18_FPN_synthetic.yaml"
#: The pretraining recipe (SGD, cosine with warmup, label smoothing) on 64 px object crops.
DEMO_PRETRAIN_ARGS = (
    "--data-path synthetic-crops --arch se_resnet18 --crops-size 48",
    "--batch-size 64 --lr 0.04 --lr-scheduler cosine --random-resize-min-scale 0.5",
    "--lr-warmup-epochs 2 --lr-warmup-decay 0.1",
    "--label-smoothing 0.1 --epochs 16 --workers 0",
    # NHWC convolutions: 26 s/epoch instead of 35-42 on a 2-core AMD EPYC (docs/notes/benchmarks.md)
    "--channels-last",
)
#: glibc malloc settings for the stage processes, never to serve allocations by mmap and never to
#: trim (PyTorch's usual CPU advice, as jemalloc/tcmalloc through LD_PRELOAD).
MALLOC_TUNABLES = "glibc.malloc.mmap_max=0:glibc.malloc.trim_threshold=68719476736"
# the folder holding the se_detectron package (a checkout, or site-packages for a wheel)
_PACKAGE_PARENT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_DONE = "stage_done.json"
# Detectron2's IterationTimer at the end of training (its format is documented as grep-able)
_SPEED = re.compile(r"Overall training speed: \d+ iterations in \S+ \(([0-9.]+) s / it\)")


class DemoError(SEDetectronError, RuntimeError):
    """A demo stage failed or its inputs are missing; the message names the stage and file."""


@dataclass
class DemoPlan:
    """What the demo runs, and where its outputs go.

    Args:
        output_dir: everything lands below it (``pretrain/``, ``pretrained/``, ``finetune/``,
            ``predictions/``, ``summary.json``).
        device: ``"cuda"`` or ``"cpu"``; None picks CUDA when it is available.
        pretrain_args: arguments of ``tools/pretrain_imagenet.py`` (without ``--output-dir``,
            ``--device`` and ``--resume``, which the demo sets).
        config_file: the detection config of the fine-tuning.
        finetune_opts: extra ``KEY VALUE`` overrides for ``tools/train_net.py``.
        num_pictures: validation pictures drawn by the predict stage.
        python: the interpreter that runs the tools.
    """

    output_dir: str = "output/demo"
    device: Optional[str] = None
    pretrain_args: List[str] = field(
        default_factory=lambda: shlex.split(" ".join(DEMO_PRETRAIN_ARGS))
    )
    config_file: str = DEMO_CONFIG
    finetune_opts: List[str] = field(default_factory=list)
    num_pictures: int = 12
    python: str = sys.executable

    def __post_init__(self):
        if self.device is None:
            import torch

            self.device = "cuda" if torch.cuda.is_available() else "cpu"

    def path(self, *parts: str) -> str:
        return os.path.join(self.output_dir, *parts)

    @property
    def trunk_weights(self) -> str:
        return self.path("pretrained", "SE-R-18-synthetic-crops.pkl")

    def commands(self) -> Dict[str, List[str]]:
        """The command line of every stage."""
        # the tools as `python -m se_detectron TOOL`: works from a checkout and from a wheel
        tool = lambda name: ["-m", "se_detectron", name]  # noqa: E731
        config_file = self.config_file
        if not os.path.isfile(config_file):
            config_file = get_config_file(config_file)  # FileNotFoundError lists the shipped ones
        finetune_dir = self.path("finetune")
        return {
            "pretrain": [self.python, *tool("pretrain_imagenet"), *self.pretrain_args]
            + ["--device", self.device, "--output-dir", self.path("pretrain"), "--resume", "auto"],
            "convert": [
                self.python,
                *tool("convert_pretrained"),
                self.path("pretrain", "best.pth"),
                self.trunk_weights,
            ],
            "finetune": [
                self.python,
                *tool("train_net"),
                "--config-file",
                config_file,
                "--resume-if-possible",
                "OUTPUT_DIR",
                finetune_dir,
                "MODEL.WEIGHTS",
                self.trunk_weights,
                "MODEL.DEVICE",
                self.device,
                *self.finetune_opts,
            ],
            "predict": [
                self.python,
                *tool("predict"),
                "--config-file",
                os.path.join(finetune_dir, "config.yaml"),
                "--input",
                os.path.join(default_synthetic_root(), "val"),
                "--max-images",
                str(self.num_pictures),
                "--output",
                self.path("predictions"),
                "--overwrite",  # a stage that reruns replaces its pictures
                "--opts",
                "MODEL.WEIGHTS",
                os.path.join(finetune_dir, "model_final.pth"),
                "MODEL.DEVICE",
                self.device,
            ],
        }

    def outputs(self) -> Dict[str, List[str]]:
        """The files whose existence makes a stage complete."""
        return {
            "pretrain": [self.path("pretrain", "best.pth")],
            "convert": [self.trunk_weights],
            "finetune": [
                self.path("finetune", "model_final.pth"),
                self.path("finetune", "final_results.json"),
            ],
            "predict": [self.path("predictions", "detections.json")],
        }


def stage_environment(environ: Dict[str, str], **extra: str) -> Dict[str, str]:
    """The environment of the stage processes: ``environ`` plus ``extra``, and glibc's allocator
    told to keep freed memory (:data:`MALLOC_TUNABLES`) unless the user chose an allocator
    (``GLIBC_TUNABLES`` or ``LD_PRELOAD`` set).

    By default glibc returns large freed blocks to the system and faults them in again on the
    next iteration: the demo took 22 million minor page faults (docs/notes/benchmarks.md, "Where the
    demo's time goes").

    Args:
        environ: the caller's environment.
        **extra: variables to set.
    """
    env = dict(environ, **extra)
    if "GLIBC_TUNABLES" not in env and "LD_PRELOAD" not in env:
        env["GLIBC_TUNABLES"] = MALLOC_TUNABLES
    return env


def _marker(plan: DemoPlan, stage: str) -> str:
    return plan.path(f"{stage}.{_DONE}")


def _is_done(plan: DemoPlan, stage: str, command: Sequence[str]) -> bool:
    try:
        with open(_marker(plan, stage)) as f:
            record = json.load(f)
    except (OSError, ValueError):
        return False
    return record.get("command") == list(command) and all(
        os.path.isfile(p) for p in plan.outputs()[stage]
    )


def _run_stage(plan: DemoPlan, stage: str, command: List[str], env: Dict[str, str]) -> float:
    print(f"\n[demo] stage {stage}: {shlex.join(command)}", flush=True)
    start = time.perf_counter()
    result = subprocess.run(command, env=env)  # in the caller's working directory
    seconds = time.perf_counter() - start
    if result.returncode != 0:
        raise DemoError(
            f"stage {stage!r} failed (exit {result.returncode}) after {seconds:.0f} s; its output "
            "is above. Rerunning the demo continues from this stage. Command: "
            + shlex.join(command)
        )
    missing = [p for p in plan.outputs()[stage] if not os.path.isfile(p)]
    if missing:
        raise DemoError(f"stage {stage!r} finished but did not write {', '.join(missing)}")
    atomic_write_json(_marker(plan, stage), {"command": command, "seconds": seconds}, indent=1)
    return seconds


def run_demo(plan: DemoPlan, rerun: Optional[str] = None) -> Dict:
    """Run (or reuse) every stage, then write and return the summary.

    Args:
        plan: what to run.
        rerun: a stage name (or ``"all"``): redo that stage and every later one even if its
            outputs are complete.

    Returns:
        dict: the summary (see :func:`format_summary`), also written to ``summary.json``.

    Raises:
        DemoError: naming the stage that failed.
    """
    if rerun is not None and rerun != "all" and rerun not in STAGES:
        raise DemoError(f"--rerun {rerun!r}: expected 'all' or one of {', '.join(STAGES)}")
    forced_from = 0 if rerun == "all" else STAGES.index(rerun) if rerun else len(STAGES)
    os.makedirs(plan.output_dir, exist_ok=True)
    paths = [_PACKAGE_PARENT] + ([os.environ["PYTHONPATH"]] if os.environ.get("PYTHONPATH") else [])
    env = stage_environment(os.environ, PYTHONPATH=os.pathsep.join(paths))
    stages, redo = {}, False
    for index, (stage, command) in enumerate(plan.commands().items()):
        # A stage reruns if asked to, if it is not complete, or if an earlier stage reran.
        redo = redo or index >= forced_from or not _is_done(plan, stage, command)
        if redo:
            stages[stage] = {"seconds": _run_stage(plan, stage, command, env), "reused": False}
        else:
            with open(_marker(plan, stage)) as f:
                seconds = json.load(f)["seconds"]
            print(f"[demo] stage {stage}: reused (done in {seconds / 60:.1f} min)", flush=True)
            stages[stage] = {"seconds": seconds, "reused": True}
    summary = _summarize(plan, stages)
    atomic_write_json(plan.path("summary.json"), summary, indent=2)
    print("\n" + format_summary(summary), flush=True)
    return summary


def _summarize(plan: DemoPlan, stages: Dict) -> Dict:
    with open(plan.path("finetune", "final_results.json")) as f:
        results = json.load(f)
    dataset, per_task = next(iter(results.items()))
    with open(plan.path("predictions", "detections.json")) as f:
        pictures = json.load(f)
    with open(plan.path("pretrain", "metrics.jsonl")) as f:
        epochs = [json.loads(line) for line in f if line.strip()]
    pretrain_top1 = max(e["val_top1"] for e in epochs)
    metrics = ("AP", "AP50", "AP75", "APs", "APm", "APl")
    summary = {
        "dataset": dataset,
        "bbox": {k: per_task["bbox"][k] for k in metrics},
        "pretrain_val_top1": pretrain_top1,
        "device": plan.device,
        "machine": {"cpu": cpu_name(), "cores": os.cpu_count()},
        "speed": {
            "pretrain_epochs": len(epochs),
            "pretrain_s_per_epoch": sum(e["epoch_time"] for e in epochs) / len(epochs),
            "finetune_iterations": _finetune_iterations(plan),
            "finetune_s_per_iter": _finetune_s_per_iter(plan.path("finetune", "log.txt")),
        },
        "stages": stages,
        "total_minutes": sum(s["seconds"] for s in stages.values()) / 60,
        "detections_per_picture": [len(p["detections"]) for p in pictures],
        "outputs": {
            "pretraining": plan.path("pretrain"),
            "trunk_weights": plan.trunk_weights,
            "detector": plan.path("finetune", "model_final.pth"),
            "metrics": plan.path("finetune", "metrics.json"),
            "curves": plan.path("finetune", "curves.png"),
            "evaluation": plan.path("finetune", "final_results.json"),
            "pictures": plan.path("predictions"),
        },
    }
    if "segm" in per_task:  # a Mask R-CNN config (--config-file)
        summary["segm"] = {k: per_task["segm"][k] for k in metrics}
    return summary


def _finetune_iterations(plan: DemoPlan) -> Optional[int]:
    try:
        with open(plan.path("finetune", "config.yaml")) as f:
            return int(yaml.safe_load(f)["SOLVER"]["MAX_ITER"])
    except (OSError, KeyError, TypeError, ValueError, yaml.YAMLError):
        return None


def _finetune_s_per_iter(log_file: str) -> Optional[float]:
    """Detectron2's "Overall training speed" of the last training session in ``log.txt``.

    That figure excludes hooks (checkpoints, evaluation) and the first iterations; a resumed run
    reports the speed of its last session.
    """
    speed = None
    try:
        with open(log_file, encoding="utf-8", errors="replace") as f:
            for line in f:
                match = _SPEED.search(line)
                if match:
                    speed = float(match[1])
    except OSError:
        pass
    return speed


def format_summary(summary: Dict) -> str:
    """The summary as the lines the demo prints last."""
    box = summary["bbox"]
    machine, speed = summary["machine"], summary["speed"]
    counts = summary["detections_per_picture"]
    with_boxes = sum(1 for c in counts if c)
    lines = [
        f"[demo] box AP on {summary['dataset']}: AP {box['AP']:.1f} | AP50 {box['AP50']:.1f} | "
        f"AP75 {box['AP75']:.1f} (pretraining held-out top-1 {summary['pretrain_val_top1']:.1f}%)",
    ]
    if "segm" in summary:
        mask = summary["segm"]
        lines.append(
            f"[demo] mask AP: AP {mask['AP']:.1f} | AP50 {mask['AP50']:.1f} | "
            f"AP75 {mask['AP75']:.1f}"
        )
    lines += [
        "[demo] minutes per stage: "
        + ", ".join(
            f"{name} {s['seconds'] / 60:.1f}" + (" (reused)" if s["reused"] else "")
            for name, s in summary["stages"].items()
        )
        + f"; total {summary['total_minutes']:.1f} on {summary['device']}"
        + (f" ({machine['cpu']}, {machine['cores']} cores)" if summary["device"] == "cpu" else ""),
        f"[demo] speed: pretraining {speed['pretrain_epochs']} epochs at "
        f"{speed['pretrain_s_per_epoch']:.1f} s/epoch; fine-tuning "
        f"{speed['finetune_iterations']} iterations at "
        + (
            f"{speed['finetune_s_per_iter']:.3f} s/iter"
            if speed["finetune_s_per_iter"] is not None
            else "? s/iter"
        )
        + " (training loop, without evaluation)",
        f"[demo] detections per picture (score >= 0.5): {counts}; {with_boxes} of {len(counts)} "
        "pictures show boxes",
    ]
    lines += [f"[demo]   {name}: {path}" for name, path in summary["outputs"].items()]
    return "\n".join(lines)


def get_parser() -> argparse.ArgumentParser:
    """The command-line interface."""
    parser = argparse.ArgumentParser(
        description="`make demo`: pretrain an SE-ResNet-18 on object crops, convert it, fine-tune "
        "Faster R-CNN.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--output-dir", default="output/demo", help="where everything lands")
    parser.add_argument(
        "--device", default=None, help="cuda or cpu (default: cuda when a GPU is visible)"
    )
    parser.add_argument(
        "--rerun",
        choices=("all",) + STAGES,
        default=None,
        help="redo this stage and the later ones even if their outputs are complete",
    )
    parser.add_argument(
        "--pretrain-args",
        default=None,
        help="replace the pretraining recipe (tools/pretrain_imagenet.py arguments, one string)",
    )
    parser.add_argument("--config-file", default=DEMO_CONFIG, help="the detection config")
    parser.add_argument("--num-pictures", type=int, default=12, help="val pictures to draw")
    parser.add_argument(
        "opts", nargs=argparse.REMAINDER, default=[], help="KEY VALUE overrides for train_net"
    )
    return parser


def cli(argv=None) -> int:
    """``tools/run_demo.py`` / ``se-run-demo`` (``make demo``); returns the exit status."""
    args = get_parser().parse_args(argv)
    plan = DemoPlan(
        output_dir=args.output_dir,
        device=args.device,
        config_file=args.config_file,
        finetune_opts=list(args.opts),
        num_pictures=args.num_pictures,
    )
    if args.pretrain_args is not None:
        plan.pretrain_args = shlex.split(args.pretrain_args)
    try:
        run_demo(plan, rerun=args.rerun)
    except (DemoError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0
