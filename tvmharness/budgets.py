"""The default budgets of tuning and of dev-kit jobs: a recipe's defaults and the library's
(TuneOptions, Rack) alike, in a module that imports nothing, so the recipe takes them without
importing the stages."""

TRIALS = 64  # per model, variant and target, spread over its tasks
POPULATION = 128  # MetaSchedule's evolutionary search
PATIENCE = 256  # trials without a 1% better model estimate before a tune stops
BUILDER_TIMEOUT_S = 60.0  # per candidate build
JOB_TIMEOUT_S = 1200.0  # a dev-kit job once a kit has it: upload, load, check, warm-up and repeats
KIT_WAIT_S = 120.0  # a job (or a tuning candidate) waiting for the tracker to hand out a free kit
KIT_RETRIES = 1  # further kits tried after one died or hung
