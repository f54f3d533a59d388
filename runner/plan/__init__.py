"""From a Study to runs, one module each: ``runs`` (Run, Plan), ``identity`` (run and cell ids),
``expand`` (matrices and overrides), ``stages`` (runs that start from other runs), ``select``
(``--matrix``/``--where``) and ``diff`` (each run's state against the store).

Imports point one way: expand -> stages -> identity -> runs; the selector syntax they share
lives in ``runner/study/selectors.py``.
"""
