"""The per-image formats that both the GPU worker and the Functions app write: one set of rules for both sides.

Why a package of its own: a GPU worker writes, for a shard it finished in one clean attempt, the merge's view of its
results (``mergeview``: the entries' bytes in the merged results, their CSV lines, counts, the preview sample and the
repeat search's rows), so the merge composes bytes instead of reading every entry again (issue 11: the control
plane's CPU per image). Those bytes must be exactly what the merge would have written, so the rules exist once,
here, and ``core`` imports them. The worker image copies ``gpu_batch/`` only (gpu_batch/Dockerfile): nothing in this
package imports ``core``, ``adapters`` or ``activities`` (``tests/unit/test_formats_package.py``).
"""
