"""Results from other code bases, in and out: ``tofu_logs`` reads the eval logs of the TOFU
reference code (``locuslab/tofu``) and of open-unlearning (``locuslab/open-unlearning``) into
soul-bench records, and writes soul-bench TOFU records back as TOFU eval logs.

Nothing here trains or evaluates a model: records come from numbers a run already produced.
"""
