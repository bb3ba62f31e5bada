"""tvmharness: compressed PyTorch models through Apache TVM, measured against PyTorch and ONNX Runtime.

The library API a notebook calls (the CLI is a thin layer over it):

    from tvmharness.recipe import load_recipe
    from tvmharness.pipeline import run_recipe
    result = run_recipe(load_recipe("recipes/quickstart.toml"))
    result.frame()          # a pandas DataFrame of the rows
"""

__version__ = "0.1.0"
