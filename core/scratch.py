"""The Functions instance's local disk: how much scratch space one activity may take.

Why: Azure Functions' service limits give a Flex Consumption instance 0.8 GB of temporary storage and no persisted
storage (MicrosoftDocs/azure-docs ``includes/functions-limits.md``, row "Storage (temporary)"; its note: the limit is
the total content size in temporary storage across everything the instance runs), and ``host.json`` lets
``maxConcurrentActivityFunctions`` (8) activities run at once on one instance. A ``tempfile`` file of an activity
lands there; one that outgrows its share fails, with "No space left on device", an activity that another, smaller
task would not fail, and only at scale, where nothing here has run. So each activity's scratch files must stay within
``ACTIVITY_SCRATCH_BYTES`` at the largest input its defaults give it (a merge part: ``merge_images_per_part``
images plus a shard), and an activity whose input grows with the task (a combine) uses none: it streams from blobs
(``adapters.block_writer`` and ranged reads). ``tests/integration/test_scratch_disk.py`` measures each one's peak
(``devhost/scratch_disk.py``: exact, not sampled) and checks it against this share; devhost caps the scratch files
of all it runs at ``FLEX_TEMPORARY_STORAGE_BYTES`` together, as an instance does (its fidelity table, row 22).

The HTTP functions (the image list a start reads, at most ``TRAPBATCH_IMAGE_LIST_MAX_BYTES``) run in Flex's ``http``
scale group, on other instances than the durable functions (per-function scaling), so they are not counted here.
"""
from __future__ import annotations

FLEX_TEMPORARY_STORAGE_BYTES = 800_000_000  # "0.8 GB", read as decimal: the smaller reading
MAX_CONCURRENT_ACTIVITIES = 8  # host.json extensions.durableTask.maxConcurrentActivityFunctions (a test pins it)
ACTIVITY_SCRATCH_BYTES = FLEX_TEMPORARY_STORAGE_BYTES // MAX_CONCURRENT_ACTIVITIES  # 100 MB
