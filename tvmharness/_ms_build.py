"""MetaSchedule builder functions, kept in a module that imports nothing heavy: the builder's
worker processes import it by name for every batch."""

import os
import tempfile


def fast_build(mod, target, _params):
    """MetaSchedule's default build without `import tvm.s_tir.tensor_intrin`, which takes about 20 s
    per worker here and made whole batches miss the builder's timeout (every trial failed)."""
    from tvm.driver import build as tvm_build
    from tvm.s_tir.transform import RemoveWeightLayoutRewriteBlock

    mod = RemoveWeightLayoutRewriteBlock(skip_tensor_rewrite=True)(mod)
    return tvm_build(mod, target=target)


def export_shared_library(rt_mod, compiler: str | None = None, *, folder: str | None = None) -> str:
    """A .so the runner (local or over RPC) can load, cross-compiled when a compiler is named, in a
    folder of its own under `folder` (a tune's, removed when the tune ends: candidates of a batch a
    tune cut short would otherwise stay in the temporary folder). MetaSchedule's default export is a
    .tar that the remote device would have to link itself."""
    from tvm.support import cc

    fcompile = cc.cross_compiler(compiler) if compiler else cc.create_shared  # a new one per call: it mutates its options
    path = os.path.join(tempfile.mkdtemp(prefix="candidate-", dir=folder), "candidate.so")
    rt_mod.export_library(path, fcompile=fcompile)
    return path
