"""se_detectron: Squeeze-and-Excitation backbones for Detectron2.

Detectron2 is a prerequisite that cannot be declared here: its authors do not publish it on PyPI.
Install it first (``make setup`` does, see scripts/install_detectron2.sh) or use your own build.
"""

import re
from pathlib import Path

from setuptools import find_packages, setup

HERE = Path(__file__).resolve().parent


# Each is also `python -m se_detectron TOOL` and tools/TOOL.py (se_detectron/__main__.py TOOLS;
# tests/test_wheel.py checks that the two lists agree).
CONSOLE_SCRIPTS = [
    "se-train-net = se_detectron.engine.train_net:cli",
    "se-lazy-train-net = se_detectron.engine.lazy_train_net:cli",
    "se-submit-train = se_detectron.engine.submit:cli",
    "se-pretrain-imagenet = se_detectron.pretrain.train:cli",
    "se-convert-pretrained = se_detectron.convert.cli:cli",
    "se-predict = se_detectron.engine.predict:cli",
    "se-run-demo = se_detectron.demo:cli",
    "se-export-model = se_detectron.export.cli:cli",
    "se-deploy = se_detectron.deploy.cli:cli",
    "se-analyze-excitation = se_detectron.analysis.cli:cli",
]

setup(
    name="se_detectron",
    version=re.search(r'__version__ = "([^"]+)"', (HERE / "se_detectron/version.py").read_text())[
        1
    ],
    description="Squeeze-and-Excitation (SE-ResNet/ResNeXt, SENet-154) backbones for Detectron2",
    long_description=(HERE / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    python_requires=">=3.9",
    packages=find_packages(include=["se_detectron", "se_detectron.*"]),
    # the configs ship inside the package (as Detectron2's model_zoo configs do); the checkout's
    # top-level configs/ is a symlink to se_detectron/configs
    # (yacs .yaml and LazyConfig .py files: the .py ones are read by LazyConfig.load, not imported)
    package_data={
        "se_detectron": [
            "configs/*.yaml",
            "configs/*/*.yaml",
            "configs/*/*.py",
            "configs/*/*/*.py",
        ]
    },
    entry_points={"console_scripts": CONSOLE_SCRIPTS},
    install_requires=[
        "torch>=2.1",
        "torchvision>=0.16",
        "fvcore>=0.1.5",
        "iopath>=0.1.9",
        "pycocotools>=2.0.2",
        "faster-coco-eval>=1.6",
        "numpy>=1.23",
        "opencv-python-headless>=4.5",  # Detectron2's Visualizer (tools/predict.py)
        "Pillow>=9.0",
        "matplotlib>=3.5",
        "tqdm>=4.50",
        "PyYAML>=6.0",
        "tabulate>=0.8",
    ],
    extras_require={
        # tools/submit_train.py (SLURM jobs with requeue on preemption)
        "slurm": ["submitit>=1.5"],
        "dev": [
            "submitit>=1.5",
            "pytest>=7",
            "pytest-xdist>=3.5",
            "ruff>=0.5",
            "timm>=0.9",
            "scikit-learn>=1.2",
            "safetensors>=0.4",
            "onnx>=1.15",
            "onnxruntime>=1.17",
        ],
        # make docs: the documentation site and the API reference (docs/conf.py)
        "docs": [
            "sphinx>=8.1",
            "myst-parser>=4.0",
            "furo>=2024.8.6",
        ],
        # run exported detectors: se_detectron.deploy, se-deploy, se-predict --backend
        "deploy": [
            "onnx>=1.15",
            "onnxruntime>=1.17",
            "openvino>=2024.0",
        ],
    },
)
