"""timm weights by model name, from the Hugging Face hub or its local cache.

timm publishes the weights of most models on the Hugging Face hub (``timm/<model>.<tag>``, a
``model.safetensors`` and a ``config.json``); the hub id of a model name is in timm's pretrained
config (``timm.models.get_pretrained_cfg``). :func:`fetch_timm_weights` resolves a name (with or
without a tag, e.g. ``seresnet50`` or ``seresnet50.a1_in1k``) to that file through
``huggingface_hub.hf_hub_download``: downloaded when the network allows, else taken from the
local hub cache (always the cache with ``HF_HUB_OFFLINE=1``). The cache folder is the hub's:
``HF_HUB_CACHE``, else ``HF_HOME/hub``, else huggingface_hub's default, read when called.

A few models (the ``legacy_*`` SENets) have only a download URL in timm's config; their file is
the one ``timm.create_model(pretrained=True)`` keeps, in torch's hub cache
(``torch.hub.get_dir()/checkpoints``, under ``TORCH_HOME``), downloaded there when not offline.
"""

import os
from typing import NamedTuple

from .formats import ConversionError

__all__ = ["TimmWeights", "fetch_timm_weights", "hub_cache_dir"]

# timm's hub file names (timm.models._hub: HF_SAFE_WEIGHTS_NAME, HF_WEIGHTS_NAME)
_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")


class TimmWeights(NamedTuple):
    """A timm weights file found for a model name.

    Attributes:
        path: the local file (in the hub cache).
        hub_id: the hub repository, e.g. ``"timm/seresnet50.a1_in1k"``.
        architecture: timm's architecture name without the tag, e.g. ``"seresnet50"``.
    """

    path: str
    hub_id: str
    architecture: str


def hub_cache_dir() -> str:
    """The Hugging Face hub cache folder, from the environment at the time of the call."""
    if os.environ.get("HF_HUB_CACHE"):
        return os.environ["HF_HUB_CACHE"]
    if os.environ.get("HF_HOME"):
        return os.path.join(os.environ["HF_HOME"], "hub")
    from huggingface_hub import constants

    return constants.HF_HUB_CACHE


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().upper() in ("1", "ON", "YES", "TRUE")


def fetch_timm_weights(name: str) -> TimmWeights:
    """The weights file of timm model ``name``, downloaded or from the local hub cache.

    Args:
        name: a timm model name, optionally with a pretrained tag (``"ecaresnet50d"``,
            ``"seresnet34.a1_in1k"``); without a tag, timm's default weights.

    Returns:
        TimmWeights: the local file, hub id and architecture.

    Raises:
        ConversionError: unknown name, a model without hub weights, or weights neither
            downloadable (offline, no network) nor in the cache; the message names the model and
            the cache folder.
    """
    try:
        import timm
        from huggingface_hub import hf_hub_download
    except ImportError as e:
        raise ConversionError(f"--timm needs timm and huggingface_hub installed ({e})") from None
    architecture = name.split(".", 1)[0]
    if architecture not in timm.list_models():
        raise ConversionError(
            f"--timm {name}: timm {timm.__version__} has no model {architecture!r} (see "
            "timm.list_models('*seresne*'), timm.list_models('ecaresnet*'))"
        )
    try:
        cfg = timm.models.get_pretrained_cfg(name)
    except RuntimeError as e:  # an unknown tag
        raise ConversionError(f"--timm {name}: {e}") from None
    hub_id = getattr(cfg, "hf_hub_id", None) if cfg is not None else None
    url = getattr(cfg, "url", None) if cfg is not None else None
    if not hub_id and url:
        return _fetch_url(name, architecture, url)
    if not hub_id:
        raise ConversionError(
            f"--timm {name}: timm has no pretrained weights for it (tag "
            f"{getattr(cfg, 'tag', None)!r}; see timm.list_pretrained('{architecture}*'))"
        )
    cache = hub_cache_dir()
    offline = _offline()
    failures = []
    for filename in _WEIGHT_FILES:
        try:
            path = hf_hub_download(hub_id, filename, cache_dir=cache, local_files_only=offline)
        except Exception as e:  # huggingface_hub raises its own errors, OSError or ValueError
            failures.append(f"{filename}: {type(e).__name__}")
            continue
        return TimmWeights(path, hub_id, architecture)
    how = "HF_HUB_OFFLINE is set" if offline else "download failed (no network?)"
    raise ConversionError(
        f"--timm {name}: weights of {hub_id} not found: {how} and they are not in the Hugging "
        f"Face cache {cache} ({'; '.join(failures)}); run once with network access, or copy the "
        f"hub's models--{hub_id.replace('/', '--')} folder there"
    )


def _fetch_url(name: str, architecture: str, url: str) -> TimmWeights:
    """A URL-only timm weights file, in torch's hub cache (timm's ``load_state_dict_from_url``)."""
    import torch

    folder = os.path.join(torch.hub.get_dir(), "checkpoints")
    path = os.path.join(folder, os.path.basename(url.split("?")[0]))
    if os.path.isfile(path):
        return TimmWeights(path, url, architecture)
    if _offline():
        raise ConversionError(
            f"--timm {name}: HF_HUB_OFFLINE is set and its weights ({url}) are not in the torch "
            f"hub cache {folder}; run once with network access, or put the file there"
        )
    os.makedirs(folder, exist_ok=True)
    try:
        torch.hub.download_url_to_file(url, path, progress=True)
    except Exception as e:  # urllib errors (no network, HTTP errors)
        raise ConversionError(
            f"--timm {name}: downloading {url} failed ({type(e).__name__}: {e}) and the file is "
            f"not in the torch hub cache {folder}"
        ) from None
    return TimmWeights(path, url, architecture)
