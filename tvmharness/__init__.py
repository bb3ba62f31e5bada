"""tvmharness: compressed PyTorch models through Apache TVM, measured against PyTorch and ONNX Runtime.

From Python (README, "From Python"): `run` and `bench` are one call, which the CLI makes too:

    from tvmharness.recipe import load_recipe
    from tvmharness.pipeline import run_recipe
    result = run_recipe(load_recipe("quickstart"))  # a recipe file's path, or a shipped recipe's name
    result.frame()          # a pandas DataFrame of the rows
"""

__version__ = "0.1.0"
