"""Sphinx configuration of the se_detectron documentation (``make docs``).

The pages are the Markdown files of the repository (read by myst-parser) and an API reference
generated from the docstrings (``docs/modules/*.rst``: autodoc + napoleon for the Google-style
``Args:`` sections). ``make docs`` runs ``sphinx-build -W --keep-going``: every warning, including
a Markdown link to a page or heading that does not exist, fails the build. No network is used.
"""

import importlib
import os
import sys

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, ROOT)

from se_detectron.version import __version__  # noqa: E402

project = "se_detectron"
author = "se_detectron contributors"
copyright = "se_detectron contributors"
version = release = __version__

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.viewcode",
    "myst_parser",
]

# The source folder is the repository root (sphinx-build -c docs . docs/_build/html), so that the
# Markdown pages at the root (README.md, INSTALL.md, ...) and under docs/ link to each other with
# the same relative links that work when they are read on a code host; only these are read:
source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
root_doc = "docs/index"
include_patterns = [
    "README.md",
    "INSTALL.md",
    "GETTING_STARTED.md",
    "MODEL_ZOO.md",
    "CHANGELOG.md",
    "docs/**.md",
    "docs/**.rst",
]
exclude_patterns = [".*", "docs/_build", "output", "datasets", "build", "dist", "tests", "tools"]
# the site's entry page: _build/html/index.html forwards to docs/index.html
html_extra_path = ["_redirect"]

# -- Markdown (myst-parser) ------------------------------------------------------------------------
myst_enable_extensions = ["colon_fence", "deflist"]
# "## Heading" gets an anchor, so that [text](page.md#heading) links are checked by Sphinx
myst_heading_anchors = 4
# a Markdown link to a missing page or anchor is a warning (and -W makes it an error)
suppress_warnings = []

# -- API reference (autodoc + napoleon) ------------------------------------------------------------
autodoc_default_options = {
    "members": True,
    "show-inheritance": True,
    "member-order": "bysource",
}
autodoc_typehints = "description"
# "SeparableROIAlign", not "se_detectron.layers.roi_align.SeparableROIAlign", in each heading
add_module_names = False
autodoc_typehints_description_target = "documented_params"
autoclass_content = "class"  # our classes document their arguments in the class docstring
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_rtype = False
napoleon_use_ivar = True
# optional packages some modules import lazily or at import time; the docs never need them
autodoc_mock_imports = [
    "openvino",
    "nncf",
    "submitit",
    "onnxruntime",
]

# -- HTML ------------------------------------------------------------------------------------------
html_theme = "furo"
# code blocks without a language (file trees, layer diagrams) are shown as they are
highlight_language = "none"
html_title = f"se_detectron {release}"
html_static_path = []
html_show_sourcelink = False

# -- Cross-references --------------------------------------------------------------------------
# Every reference to an se_detectron object must resolve (nitpicky): a docstring that names a
# function that does not exist fails the build. References to other libraries (no intersphinx:
# the build uses no network) are not checked.
nitpicky = True
nitpick_ignore_regex = [
    (
        "py:.*",
        r"(torch|torchvision|numpy|np|detectron2|fvcore|yacs|omegaconf|argparse|os|pathlib"
        r"|typing|collections|enum|concurrent|subprocess|logging|PIL|nn|F|layers|detection_utils"
        r"|comm|timm|onnx|onnxruntime|safetensors|matplotlib|datetime|submitit)(\..*)?",
    ),
    # builtin and common type words of the Google-style "Args:" sections
    (
        "py:.*",
        r"(callable|iterable|optional|Module|CfgNode|DictConfig|SimpleTrainer|Tensor"
        r"|Instances|Boxes|Path|PathLike|ShapeSpec|Optimizer|ndarray|array|dtype|device"
        r"|Sequence|Mapping|Iterable|Iterator|Callable|Any|Union|Tuple|List|Dict|Set)",
    ),
]


def _resolve_se_reference(app, env, node, contnode):
    """Resolve a re-exported or unqualified se_detectron name to the object's documented home.

    ``se_detectron.data.SafeDatasetMapper`` is documented as ``se_detectron.data.mapper.
    SafeDatasetMapper``; an unqualified ``SOURCE_FORMATS`` in a module of ``se_detectron.convert``
    is looked up in that module, then its package, then the whole package. Only a unique match
    resolves, so a name that is not documented still fails the build.
    """
    if node.get("refdomain") != "py":
        return None
    target = node["reftarget"].lstrip("~.")
    module = node.get("py:module") or ""
    if target.startswith("se_detectron."):
        prefixes, tail = [target.rsplit(".", 1)[0]], target.rsplit(".", 1)[1]
    elif module.startswith("se_detectron"):
        parts = module.split(".")
        prefixes, tail = [".".join(parts[:i]) for i in range(len(parts), 0, -1)], target
    else:
        return None
    domain = env.get_domain("py")
    home = _home(target if target.startswith("se_detectron.") else f"{module}.{target}")
    if home in domain.objects:
        return domain.resolve_xref(env, node["refdoc"], app.builder, "obj", home, node, contnode)
    for prefix in prefixes:
        names = [n for n in domain.objects if n.startswith(prefix + ".") and n.endswith("." + tail)]
        if names:
            # a module-level object before a method of the same name
            depth = min(n.count(".") for n in names)
            names = [n for n in names if n.count(".") == depth]
            if len(names) == 1:
                return domain.resolve_xref(
                    env, node["refdoc"], app.builder, "obj", names[0], node, contnode
                )
            return None
    return None


def _home(dotted):
    """``module.qualname`` where the object named ``dotted`` is defined, or None."""
    module_name, _, attr = dotted.rpartition(".")
    try:
        obj = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError, ValueError):
        return None
    module, qualname = getattr(obj, "__module__", None), getattr(obj, "__qualname__", None)
    return f"{module}.{qualname}" if module and qualname else None


def _public_bases(app, name, obj, options, bases):
    """Leave ``object`` and private mixins (``_SEResidualJoin``) out of a class's "Bases:" line."""
    bases[:] = [
        b for b in bases if b is not object and not getattr(b, "__name__", "_").startswith("_")
    ]


def setup(app):
    app.connect("missing-reference", _resolve_se_reference)
    app.connect("autodoc-process-bases", _public_bases)
