from setuptools import find_packages, setup

setup(
    name="baple",
    version="0.1.0",
    description="Backdoor attacks on medical vision-language foundation models via prompt learning (BAPLe) "
    "and the baselines it is compared against",
    python_requires=">=3.10",
    packages=find_packages(include=["common*", "dassl_compat*", "trainers*", "datasets*", "clip_models*", "configs*", "scripts*"]),
    py_modules=["train"],
    package_data={"configs": ["**/*.yaml"], "clip_models": ["assets/*", "demo/model/*", "demo/README.md"],
                  "scripts": ["*.csv"]},
    include_package_data=True,
    install_requires=[
        # These two releases lie on the project's machines' local disk; newer ones would
        # pull multi-GB CUDA builds and PyPI's torchvision does not import beside the CPU torch wheel.
        "torch==2.14.1",
        "torchvision==0.29.1",
        "yacs",
        "open_clip_torch",
        "transformers",
        "tensorboard",
        "scikit-learn",
        "tqdm",
        "matplotlib",
        "safetensors",
        "pydicom",
    ],
    # submitit: the sweep's SLURM and local executors (the tests use the local one).
    extras_require={"test": ["pytest", "submitit"], "slurm": ["submitit"]},
)
