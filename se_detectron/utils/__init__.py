from .atomic import atomic_save_figure, atomic_write, atomic_write_json
from .run_dir import RunDirError, prepare_run_dir, remove_stale_temp_files

__all__ = [
    "RunDirError",
    "atomic_save_figure",
    "atomic_write",
    "atomic_write_json",
    "prepare_run_dir",
    "remove_stale_temp_files",
]
