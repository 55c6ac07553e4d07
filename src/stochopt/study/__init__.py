"""What a command does with many runs, from the plan to the report.

    plan.py         lists of values -> configurations (grid, tune_grid)
    folder.py       the output folder: fingerprint, stored runs, NUMERICS_VERSION
    experiment.py   groups -> an engine -> run records, stored as they finish (run)
    ray_engine.py   the same groups as tasks on a Ray cluster
    stats.py        intervals, paired differences, the McCandlish fit, profiles (pure numbers)
    analysis.py     run records -> tables: runs, summary, comparisons, tuning, batch sizes
    artefacts.py    the tables, figures and report written into the folder
    plots.py        the figures (matplotlib)
    report.py       the report's sentences, report.md and report.html
"""
