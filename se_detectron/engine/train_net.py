"""``tools/train_net.py``: Detectron2's setup / main / launch, for SE backbones.

Usage is Detectron2's (``--config-file``, ``--resume``, ``--eval-only``, ``--num-gpus``,
``--num-machines``, ``--machine-rank``, ``--dist-url``, trailing ``KEY VALUE`` overrides), plus
``--register-coco`` / ``--register-voc`` to train or evaluate on a dataset given by its files.
On a machine without GPUs, ``--num-gpus N`` starts N CPU processes that train together with
DistributedDataParallel over gloo.

Processes started by ``torchrun`` or ``srun`` join the group their launcher made (``env://``,
:mod:`se_detectron.utils.distributed`) instead of starting a launcher of their own. ``SIGTERM``
and ``SIGUSR1`` end training after the current iteration with a checkpoint and exit status
:data:`~se_detectron.engine.preemption.PREEMPTED_EXIT_STATUS` (the ``--num-gpus`` launcher
forwards them to its processes); ``--dist-timeout`` bounds how long processes wait for one that
stopped, which is then named in one ``error:`` line.
"""

import contextlib
import ctypes
import logging
import multiprocessing
import os
import signal
import sys
from datetime import timedelta

import torch
from detectron2.engine import default_argument_parser, default_setup, launch
from detectron2.evaluation import verify_results
from detectron2.utils import comm
from detectron2.utils.logger import setup_logger
from torch.multiprocessing import ProcessExitedException
from yacs.config import CfgNode

from ..checkpoint import SEDetectionCheckpointer
from ..config import (
    get_config_file,
    get_se_cfg,
    list_configs,
    merge_config_file,
    merge_config_opts,
)
from ..data import (
    check_datasets_registered,
    check_same_classes,
    register_datasets_from_cfg,
)
from ..errors import USER_ERRORS, SEDetectronError, exit_on_user_error
from ..utils import atomic_write_json
from ..utils.distributed import join_launcher_group, launcher_environment
from ..utils.run_dir import RunDirError, prepare_run_dir
from .heartbeat import CollectiveFailure, as_collective_failure, set_collective_timeout
from .preemption import (
    PREEMPTED_EXIT_STATUS,
    PREEMPTION_SIGNALS,
    TrainingPreempted,
    install_preemption_handlers,
)
from .trainer import SETrainer

__all__ = [
    "CHECKPOINT_PATTERNS",
    "STOPPED_PROCESS_EXIT_STATUS",
    "USER_ERRORS",
    "UserError",
    "argument_parser",
    "cli",
    "cpu_threads_per_process",
    "launch_reporting_errors",
    "main",
    "prepare_output_dir",
    "run_reporting_errors",
    "setup",
    "write_final_results",
]

logger = logging.getLogger("se_detectron")

#: The files of a training run that --overwrite would replace and --resume continues.
CHECKPOINT_PATTERNS = ("last_checkpoint", "model_*.pth")

#: Exit status of a multi-process run ended because one process stopped responding.
STOPPED_PROCESS_EXIT_STATUS = 1


class UserError(SEDetectronError):
    """A problem with the command line, config or files, reported without a traceback."""


def argument_parser(epilog=None):
    """Detectron2's ``default_argument_parser`` plus dataset registration flags.

    Args:
        epilog: the help's closing example (default: a ``tools/train_net.py`` one).
    """
    parser = default_argument_parser(
        epilog=epilog
        or "Example: python tools/train_net.py --config-file "
        "configs/Synthetic/faster_rcnn_SE_R_50_FPN_synthetic.yaml OUTPUT_DIR output/demo"
    )
    parser.add_argument(
        "--register-coco",
        action="append",
        default=[],
        metavar="NAME:ANNOTATION_JSON:IMAGE_ROOT",
        help="register a COCO-format dataset under NAME (repeatable); then use NAME in "
        "DATASETS.TRAIN / DATASETS.TEST. Same as adding the entry to DATASETS.REGISTER_COCO.",
    )
    parser.add_argument(
        "--register-voc",
        action="append",
        default=[],
        metavar="NAME:VOC_ROOT:SPLIT[:CLASS1,CLASS2,...]",
        help="register a Pascal-VOC-format dataset (ROOT/Annotations, ROOT/JPEGImages, "
        "ROOT/ImageSets/Main/SPLIT.txt) under NAME (repeatable). Class names (contiguous ids in "
        "this order) are the optional 4th field, else the sorted <object><name> set of the XML "
        "files of every split of VOC_ROOT, so train and val of one root share one id map; two "
        "entries giving one root different classes are an error. Same as adding the entry to "
        "DATASETS.REGISTER_VOC.",
    )
    parser.add_argument(
        "--resume-if-possible",
        action="store_true",
        help="resume from OUTPUT_DIR's last checkpoint if there is one, else start a new run "
        "(for jobs that are restarted; plain --resume with nothing to resume is an error)",
    )
    parser.add_argument(
        "--dist-timeout",
        type=float,
        default=1800.0,
        metavar="SECONDS",
        help="how long the processes of a multi-process run wait for one that stopped before "
        "the job ends with one line naming it (default 1800, Detectron2's 30 minutes)",
    )
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="start a new run in an OUTPUT_DIR that holds the checkpoints of an earlier run "
        "(they are replaced); without it, or --resume, such a folder is refused",
    )
    return parser


def _merge(cfg, args):
    if args.config_file:
        if not os.path.isfile(args.config_file):
            try:  # a config shipped in the package, e.g. "COCO-Detection/....yaml"
                args.config_file = get_config_file(args.config_file)
            except FileNotFoundError:
                raise UserError(
                    f"--config-file {args.config_file!r}: no such file, and no config of that "
                    f"name ships with se_detectron (shipped: {', '.join(list_configs('.yaml'))})"
                ) from None
        merge_config_file(cfg, args.config_file)
    merge_config_opts(cfg, args.opts)
    cfg.DATASETS.REGISTER_COCO = list(cfg.DATASETS.REGISTER_COCO) + list(args.register_coco)
    cfg.DATASETS.REGISTER_VOC = list(cfg.DATASETS.REGISTER_VOC) + list(args.register_voc)


def _check_batch_size(cfg, args):
    world_size = comm.get_world_size()
    batch = cfg.SOLVER.IMS_PER_BATCH
    if batch < 1 or batch % max(world_size, 1):
        raise UserError(
            f"SOLVER.IMS_PER_BATCH {batch}: the total batch must be a positive multiple of the "
            f"{max(world_size, 1)} training process(es)"
        )


def prepare_output_dir(output_dir, args, key="OUTPUT_DIR"):
    """Apply the run-folder rules of :func:`~se_detectron.utils.run_dir.prepare_run_dir` for a
    training run (nothing for ``--eval-only``) and set ``args.resume`` to whether it resumes.

    Args:
        output_dir: the run's folder.
        args: parsed arguments (``resume``, ``resume_if_possible``, ``overwrite``,
            ``eval_only``).
        key: the config key of the folder, for messages.
    """
    if args.eval_only:
        return
    error = None
    try:
        args.resume = prepare_run_dir(
            output_dir,
            checkpoint_patterns=CHECKPOINT_PATTERNS,
            resume_file="last_checkpoint",
            resume=args.resume,
            resume_if_possible=args.resume_if_possible,
            overwrite=args.overwrite,
            key=key,
            main_process=comm.is_main_process(),
        )
    except RunDirError as e:
        error = e
    if comm.get_world_size() > 1:
        # the main process alone locks the folder: all processes end if one of them fails,
        # and one of them (the main one, else the first that failed) says why
        failed = [i for i, bad in enumerate(comm.all_gather(error is not None)) if bad]
        if failed and comm.get_rank() != failed[0]:
            raise SystemExit(2)
    if error is not None:
        raise error


def setup(args) -> CfgNode:
    """Build the frozen config, register datasets and set up logging/output like Detectron2.

    Args:
        args: parsed :func:`argument_parser` arguments.
    """
    cfg = get_se_cfg()
    _merge(cfg, args)
    _check_batch_size(cfg, args)
    if cfg.MODEL.DEVICE.startswith("cuda") and not torch.cuda.is_available():
        logging.getLogger("se_detectron").warning(
            "MODEL.DEVICE=%s but CUDA is not available: using MODEL.DEVICE=cpu", cfg.MODEL.DEVICE
        )
        cfg.MODEL.DEVICE = "cpu"
    if args.eval_only and not cfg.MODEL.WEIGHTS and not args.resume:
        raise UserError("--eval-only needs weights: add MODEL.WEIGHTS /path/to/model_final.pth")
    cfg.freeze()
    register_datasets_from_cfg(cfg)
    names = list(cfg.DATASETS.TEST) if args.eval_only else [*cfg.DATASETS.TRAIN, *cfg.DATASETS.TEST]
    check_datasets_registered(names)
    if not args.eval_only:
        check_same_classes(cfg.DATASETS.TRAIN, cfg.DATASETS.TEST)
    prepare_output_dir(cfg.OUTPUT_DIR, args)
    default_setup(cfg, args)
    setup_logger(cfg.OUTPUT_DIR, distributed_rank=comm.get_rank(), name="se_detectron")
    return cfg


def cpu_threads_per_process(num_processes, cores=None, environ=None):
    """Torch threads for each of ``num_processes`` CPU training processes on one machine.

    Every PyTorch process starts as many threads as there are cores; N CPU training processes
    then run N x cores threads that spin against each other (26x slower, measured in
    docs/notes/benchmarks.md, "CPU threads and loader workers"). Like ``torchrun`` (which sets
    ``OMP_NUM_THREADS=1``), the cores are split between the processes unless the user set
    ``OMP_NUM_THREADS``.

    Args:
        num_processes: training processes on this machine (``--num-gpus`` on a CPU machine).
        cores: CPU cores (default ``os.cpu_count()``).
        environ: the environment (default ``os.environ``).

    Returns:
        int or None: threads per process, or None to leave PyTorch's default (one process, or
        ``OMP_NUM_THREADS`` set).
    """
    environ = os.environ if environ is None else environ
    if num_processes <= 1 or environ.get("OMP_NUM_THREADS"):
        return None
    return max(1, (cores or os.cpu_count() or 1) // num_processes)


def _write_final_results(cfg, results):
    write_final_results(cfg.OUTPUT_DIR, cfg.DATASETS.TEST, results)


def write_final_results(output_dir, test_names, results):
    """Write ``final_results.json`` (main process) and log each dataset's box AP.

    Args:
        output_dir: the run's output directory.
        test_names: the evaluated dataset names.
        results: ``{dataset: {task: {metric: value}}}``, or a single dataset's
            ``{task: {metric: value}}`` (as ``DefaultTrainer.test`` returns it); None or empty:
            nothing is written.
    """
    if not comm.is_main_process() or not results:
        return
    if len(test_names) == 1 and test_names[0] not in results:
        # DefaultTrainer.test unwraps the results of a single dataset
        results = {test_names[0]: results}
    path = os.path.join(output_dir, "final_results.json")
    atomic_write_json(path, results, indent=2, default=float)
    for dataset, per_task in results.items():
        for task, label in (("bbox", "box"), ("segm", "mask"), ("keypoints", "keypoint")):
            metrics = per_task.get(task, {})
            if "AP" in metrics:
                logger.info(
                    f"Final {label} AP on {dataset}: AP={metrics['AP']:.2f} "
                    f"AP50={metrics['AP50']:.2f} AP75={metrics['AP75']:.2f} (written to {path})"
                )


def main(args):
    """Train (or with ``--eval-only`` evaluate) as configured; returns the evaluation results."""
    cfg = setup(args)
    if args.eval_only:
        model = SETrainer.build_model(cfg)
        SEDetectionCheckpointer(model, save_dir=cfg.OUTPUT_DIR, cfg=cfg).resume_or_load(
            cfg.MODEL.WEIGHTS, resume=args.resume
        )
        results = SETrainer.test(cfg, model)
        if comm.is_main_process():
            verify_results(cfg, results)
        _write_final_results(cfg, results)
        return results

    trainer = SETrainer(cfg)
    trainer.resume_or_load(resume=args.resume)
    trainer.train()
    results = getattr(trainer, "_last_eval_results", None)
    _write_final_results(cfg, results)
    return results


def _main_reporting_errors(args):
    return run_reporting_errors(main, args)


def run_reporting_errors(main_fn, args):
    """Run ``main_fn(args)`` in one training process: CPU thread split, user errors in one line.

    With ``--num-gpus N`` on a CPU machine the cores are split between the N processes (see
    :func:`cpu_threads_per_process`). A user error (:data:`~se_detectron.errors.USER_ERRORS`,
    a full disk, a read-only folder) is printed as one ``error: ...`` line on stderr and the
    process exits with status 2 (:func:`~se_detectron.errors.exit_on_user_error`).

    Args:
        main_fn: the tool's ``main(args)``.
        args: the parsed arguments (``num_gpus`` is read).
    """
    local = comm.get_local_size() if comm.get_world_size() > 1 else args.num_gpus
    threads = None if torch.cuda.is_available() else cpu_threads_per_process(local)
    if threads is not None:
        torch.set_num_threads(threads)
        if comm.get_rank() == 0:
            print(
                f"[se_detectron] {local} CPU training processes on {os.cpu_count()} "
                f"cores: {threads} torch thread(s) each (set OMP_NUM_THREADS to choose)",
                flush=True,
            )
    install_preemption_handlers(PREEMPTION_SIGNALS + tuple(getattr(args, "preemption_signals", ())))
    set_collective_timeout(args.dist_timeout)
    try:
        return exit_on_user_error(main_fn, args)
    except (TrainingPreempted, CollectiveFailure, Exception) as e:
        # an error of a hook's after_train (run after the loop stopped) hides the cause
        cause = _first_in_chain(e, (TrainingPreempted, CollectiveFailure, RuntimeError))
        if isinstance(cause, RuntimeError):
            cause = as_collective_failure(cause, comm.get_rank(), comm.get_world_size())
        if isinstance(cause, CollectiveFailure):
            _report_stopped(cause)
        if not isinstance(cause, TrainingPreempted):
            raise
        if comm.is_main_process():
            print(f"[se_detectron] {cause.message()}", file=sys.stderr, flush=True)
        raise SystemExit(PREEMPTED_EXIT_STATUS) from None


def _first_in_chain(exc, types):
    """``exc`` or the first exception it was raised from or during that is one of ``types``."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, types):
            return exc
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return None


def _report_stopped(failure: CollectiveFailure):
    if failure.reporter:
        print(f"error: {failure}", file=sys.stderr, flush=True)
    failure.end_stopped_local_processes()
    sys.stderr.flush()
    os._exit(STOPPED_PROCESS_EXIT_STATUS)  # a clean exit would wait on the stopped process


def _die_with_parent(parent_pid: int) -> None:
    """Ask Linux to send this process SIGTERM when the launcher that started it dies (then it
    saves and exits like a preempted run) instead of leaving it running as an orphan."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, int(signal.SIGTERM))  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # not Linux
        return
    if os.getppid() != parent_pid:  # the launcher died before prctl
        os.kill(os.getpid(), signal.SIGTERM)


def _launched_process(parent_pid, main_fn, args):
    _die_with_parent(parent_pid)
    return run_reporting_errors(main_fn, args)


def _forward_to_children(signum, frame):
    for child in multiprocessing.active_children():
        with contextlib.suppress(ProcessLookupError):
            os.kill(child.pid, signum)


def launch_reporting_errors(main_fn, args):
    """Run :func:`run_reporting_errors` in every process of the job.

    * Started by ``torchrun`` or ``srun`` with several processes: join the group the launcher
      made (``env://``) and run here.
    * Otherwise Detectron2's ``launch`` starts ``--num-gpus`` processes per machine; this
      process forwards ``SIGTERM``/``SIGUSR1`` to them, they end when it dies, and it exits
      with their status (2: user error, 75: preempted, 1: a process stopped).

    Args:
        main_fn: the tool's ``main(args)`` (a module-level function: it is pickled for spawn).
        args: the parsed arguments (``num_gpus``, ``num_machines``, ``machine_rank``,
            ``dist_url``, ``dist_timeout``).

    Raises:
        SystemExit: with the status of the processes.
    """
    if args.dist_timeout <= 0:
        exit_on_user_error(_raise, UserError(f"--dist-timeout {args.dist_timeout}: must be > 0"))
    timeout = timedelta(seconds=args.dist_timeout)
    launch_env = launcher_environment()
    if launch_env is not None and launch_env.world_size > 1:
        if args.num_gpus > 1 or args.num_machines > 1:
            exit_on_user_error(
                _raise,
                UserError(
                    f"started by {launch_env.launcher} as process {launch_env.rank} of "
                    f"{launch_env.world_size}, but --num-gpus {args.num_gpus} --num-machines "
                    f"{args.num_machines} asks for another launcher: drop --num-gpus / "
                    "--num-machines (the launcher starts the processes)"
                ),
            )
        _die_with_parent(os.getppid())  # torchrun's agent: no orphan if it is killed
        join_launcher_group(launch_env, timeout=timeout)
        return run_reporting_errors(main_fn, args)
    if args.num_gpus * args.num_machines <= 1:
        return run_reporting_errors(main_fn, args)
    for signum in PREEMPTION_SIGNALS:
        signal.signal(signum, _forward_to_children)
    try:
        launch(
            _launched_process,
            args.num_gpus,
            num_machines=args.num_machines,
            machine_rank=args.machine_rank,
            dist_url=args.dist_url,
            args=(os.getpid(), main_fn, args),
            timeout=timeout,
        )
    except ProcessExitedException as e:
        # the processes printed why (an error: line, or the preemption line)
        if e.exit_code in (2, PREEMPTED_EXIT_STATUS, STOPPED_PROCESS_EXIT_STATUS):
            raise SystemExit(e.exit_code) from None
        raise


def _raise(exc):
    raise exc


def cli(argv=None):
    """Parse ``argv`` and train/evaluate, in ``--num-gpus`` processes per machine."""
    args = argument_parser().parse_args(argv)
    print("Command Line Args:", args)
    launch_reporting_errors(main, args)
