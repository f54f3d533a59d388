"""The probe kinds, by name: what a ``[[probe]]`` block's ``kind`` may be. Torch-free.

Each kind is one file here holding its settings schema (validated by ``runner plan``), its
compute function (run by the probe worker; it imports torch itself) and the names of the
results it records. To add a kind:

1. ``runner/probes/kinds/<kind>.py``: a ``Settings`` subclass, ``compute(model, config,
   settings, device, study_dir) -> (summary, arrays)`` and ``KIND = ProbeKind(...)``
   (runner/probes/kinds/base.py says what each field is for);
2. its ``KIND`` in the tuple below;
3. its report: a table in ``TABLES`` of analysis/probe_tables.py and its figures (or None) in
   ``FIGURES`` of analysis/probe_figures.py (tests/test_probe.py checks every kind has both);
4. a line of the ``[[probe]]`` example in runner/study/probes.py's docstring, for users.
"""

from __future__ import annotations

from runner.errors import choices
from runner.probes.kinds import attention_maps, inference_time, shape_bias
from runner.probes.kinds.base import ProbeKind

KINDS: dict[str, ProbeKind] = {k.name: k for k in (attention_maps.KIND, shape_bias.KIND, inference_time.KIND)}


def get_kind(name: str) -> ProbeKind:
    """The kind of that name; a LookupError naming the registered kinds otherwise (a tasks file
    written by another version of runner: the block was validated against this registry)."""
    if name not in KINDS:
        raise LookupError(f"unknown probe kind {name!r}; registered: {choices(KINDS)}")
    return KINDS[name]
