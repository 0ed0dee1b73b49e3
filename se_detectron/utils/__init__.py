from .atomic import atomic_save_figure, atomic_write, atomic_write_json

__all__ = ["atomic_save_figure", "atomic_write", "atomic_write_json"]
