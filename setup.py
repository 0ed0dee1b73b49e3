"""se_detectron: Squeeze-and-Excitation backbones for Detectron2.

Detectron2 is a prerequisite that cannot be declared here: its authors do not publish it on PyPI.
Install it first (``make setup`` does, see scripts/install_detectron2.sh) or use your own build.
"""

from pathlib import Path

from setuptools import find_packages, setup

setup(
    name="se_detectron",
    version="0.1.0",
    description="Squeeze-and-Excitation (SE-ResNet/ResNeXt, SENet-154) backbones for Detectron2",
    long_description=Path(__file__).with_name("README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    python_requires=">=3.9",
    packages=find_packages(include=["se_detectron", "se_detectron.*"]),
    include_package_data=True,
    install_requires=[
        "torch>=2.1",
        "torchvision>=0.16",
        "fvcore>=0.1.5",
        "iopath>=0.1.9",
        "pycocotools>=2.0.2",
        "faster-coco-eval>=1.6",
        "numpy>=1.23",
        "opencv-python-headless>=4.5",  # Detectron2's Visualizer (tools/demo.py)
        "Pillow>=9.0",
        "matplotlib>=3.5",
        "tqdm>=4.50",
        "PyYAML>=6.0",
        "tabulate>=0.8",
    ],
    extras_require={
        "dev": [
            "pytest>=7",
            "ruff>=0.5",
            "timm>=0.9",
            "scikit-learn>=1.2",
            "safetensors>=0.4",
            "onnx>=1.15",
            "onnxruntime>=1.17",
        ],
    },
)
