from setuptools import find_packages, setup

setup(
    name="baple",
    version="0.1.0",
    description="Backdoor attacks on medical vision-language foundation models via prompt learning (BAPLe) "
    "and the baselines it is compared against",
    python_requires=">=3.10",
    packages=find_packages(include=["common*", "dassl_compat*", "trainers*", "datasets*", "clip_models*", "configs*", "scripts*", "benchmarks*"]),
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
        "tabulate",  # the tables the scripts print and write (plain text, Markdown, LaTeX)
    ],
    # Beside python train.py and python -m scripts.X: the same commands, exit codes and flags (common/cli.py).
    entry_points={"console_scripts": [
        "baple-train = train:run",
        "baple-sweep = scripts.sweep.command:run",
        "baple-report = scripts.report:run",
        "baple-figures = scripts.figures:run",
        "baple-defend = scripts.defend:run",
        "baple-quickstart = scripts.quickstart:run",
        "baple-fidelity = scripts.fidelity:run",
        "baple-build-demo-model = scripts.build_demo_model:run",
        "baple-standins = clip_models.standins:run",
        "baple-synthetic = datasets.synthetic:run",
        "baple-prepare-covid = datasets.prepare.covid:run",
        "baple-prepare-rsna18 = datasets.prepare.rsna18:run",
        "baple-prepare-mimic = datasets.prepare.mimic:run",
        "baple-prepare-kather = datasets.prepare.kather:run",
        "baple-prepare-pannuke = datasets.prepare.pannuke:run",
        "baple-prepare-digestpath = datasets.prepare.digestpath:run",
        "baple-prepare-wsss4luad = datasets.prepare.wsss4luad:run",
        "baple-benchmark = benchmarks.run:run",
    ]},
    # submitit: the sweep's SLURM and local executors (the tests use the local one).
    extras_require={"test": ["pytest", "submitit"], "slurm": ["submitit"]},
)
