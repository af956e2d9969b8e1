"""Sweep: datasets x backbones x methods x target classes x seeds x varied config values, one run
folder each; finished runs (a ``results.json``) are skipped, so the same command resumes a sweep.

    python -m scripts.sweep --root DATA --output-dir output/table1 \\
        --datasets covid rsna18 mimic --backbones medclip biomedclip \\
        --methods all --targets all --seeds 1 [--vary KEY=V1,V2 ...] [-- KEY VALUE ...]

Layout: ``OUTPUT_DIR/<dataset>/<method>/<backbone>[/<KEY>=<VALUE>...][/target<k>]/seed<s>``. A clean
method (ZeroShot, Clean_PL, Clean_FT) does not depend on the target class and runs once per seed,
without the target level. BAPLe starts from the Clean_PL run of the same dataset, backbone,
varied values and seed (the paper's protocol; ``--baple-init clean-pl``), which the sweep adds
and runs first; ``--baple-init random`` starts from CoOp's random context instead. BAPLe_CoCoOp
starts from the Clean_CoCoOp run in the same way.

Each run is ``python -m train`` in a process of its own, forked from a server process that has
imported the project once, with its console output in ``<run folder>/sweep.log``: a run that
crashes does not stop the sweep, and failed runs are listed at the end (exit code 1). A lock file
``<run folder>/.lock`` (created with O_EXCL, refreshed every minute) keeps two sweeps on the same
``OUTPUT_DIR`` from running one run twice; a lock whose process is gone, or that has not been refreshed
for 10 minutes, is taken over.

Executors: ``sequential`` (default) runs one run after another here; ``slurm`` submits job arrays
through submitit (one job per run) and returns, or with ``--wait`` follows them; ``local`` is
submitit's local executor, the same path on this machine (every run of a stage at once).
Exit codes: 0 nothing failed, 1 some run failed, 2 bad input (one line naming the problem).

Modules: ``plan`` (the runs, pure), ``lock`` (a run folder's lock), ``executors`` (running them),
``command`` (this command line).
"""
