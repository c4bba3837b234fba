"""The training methods' names, for the CLI's help and choices without importing torch
(``qcompile.stages.STAGES`` holds the classes; a test keeps the two in step)."""

METHODS: tuple[str, ...] = ("br", "ddq", "dmbq", "dqa", "sdq", "uniform")
