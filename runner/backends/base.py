"""The seam between the runner and a cluster's batch scheduler: what a backend must do.

The runner asks a backend to run runs it cannot watch itself, on machines that share only
the filesystem of the run folders with it, and later asks what became of them. SLURM is
the one such backend (``runner/backends/slurm.py``); ``runner launch --backend slurm``
(``runner/launch/scheduler.py``), ``runner tune --backend slurm`` (``runner/tune/slurm.py``),
``runner status`` and ``runner cancel`` (``runner/commands.py``) all go through it.

The local launch is not a backend in this sense: its workers are the launcher's own child
processes (``runner/backends/local.py``), fed run by run and heard from over a pipe the
moment anything happens, by the dispatcher (``runner/launch/dispatch.py``), which needs no
polling, no job handles and no cancel beyond a signal to its own children.
"""

from __future__ import annotations

from typing import Collection, Protocol, Sequence


class Backend(Protocol):
    """A batch scheduler that runs chunks of runs as jobs and answers, in one call, what
    became of many jobs.

    The contract:

    * ``submit`` sends each chunk (run ids, trained one after another by one job) and returns
      one job handle per chunk, in chunk order. Before it returns, every run's folder records
      its handle (so ``handle_of`` finds it, and a job started twice, or a run submitted again,
      is trained by one job only). ``ranks``: processes per run (``gpus_per_run``); ``after``:
      handles of jobs that must end before these start (a staged study's upstreams). A refusal
      by the scheduler raises ``BackendError`` with its words.
    * ``poll`` asks about many handles at once: one batch call, however many runs, as it is
      made every few seconds. It answers with the scheduler's own word for each handle
      (``"RUNNING"``), sorted by ``waiting``, ``running`` and ``final`` (the scheduler will not
      run the job again by itself); a handle it has no record of is left out, and a scheduler
      that does not answer gives no words: the caller shows those runs as unknown, never dead.
    * ``cancel`` stops jobs; their runs checkpoint and end as cancelled.

    What a backend may write: its jobs run ``runner/train/worker.py``, which writes only its
    runs' folders (``runner/records/runfolder.py``: atomic replaces and appended lines); the
    backend itself writes only its job record in each run's folder. It never writes the
    store: the ``runner`` process that submitted or polls ingests the folders, and is its only
    writer (SQLite's locking does not hold across the nodes of a cluster).

    To add a backend (PBS, LSF, ...): a module here with a class of these members, a job entry
    point like ``runner/backends/slurm_job.py`` that trains its chunk with the worker's batch
    mode, and a ``--backend`` choice in ``runner/cli/app.py``.
    """

    waiting: frozenset[str]  # the job waits to run (again)
    running: frozenset[str]
    final: frozenset[str]  # the scheduler will not run the job again by itself

    def submit(self, chunks: list[list[str]], *, job_name: str, ranks: int = 1,
               after: Sequence[str] = ()) -> list[str]: ...

    def poll(self, handles: Collection[str]) -> dict[str, str]: ...

    def cancel(self, handles: Collection[str]) -> None: ...

    def handle_of(self, run_id: str) -> str | None:
        """The handle of the job the run's folder says owns it (None: never submitted)."""
        ...

    def log_of(self, run_id: str) -> str | None:
        """Where the output of the run's job went, for messages."""
        ...
