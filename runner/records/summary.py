"""The summary of a finished run (``summary.json``, the done mark): its keys, defined once.

The training loop writes a ``Summary`` (``runner/train/loop.py``), the worker adds where an
``init = "run:..."`` run's weights came from, the store indexes it as JSON, and the tables,
figures and the tuner read its numbers by name: ``SUMMARY_METRICS`` is the list of those names.
Accuracies are fractions in [0, 1] (tables scale them); a summary written by an older runner
may lack a key, so readers ask with ``.get``.

Torch-free and import-cheap: ``runner plan``, ``status`` and ``report`` import it. Written
without ``from __future__ import annotations``: Python 3.11's ``TypedDict`` sees ``NotRequired``
only in evaluated annotations.
"""

from typing import NotRequired, TypedDict


class Metrics(TypedDict):
    """The numbers every finished run records (design.md, "The store"); more may be added freely."""

    test_acc: float  # test accuracy of the weights the recipe's ``select`` picks (best on the monitor, or last)
    test_loss: float  # mean test cross-entropy of those weights
    test_acc_best: float  # test accuracy of the weights best on the monitor
    test_loss_best: float  # test loss of the weights best on the monitor
    test_acc_last: float  # test accuracy of the last epoch's weights
    test_loss_last: float  # test loss of the last epoch's weights
    best_val_acc: float  # highest validation accuracy of any validation
    best_epoch: int  # the epoch whose weights were best on the monitor
    best_monitor: float  # the monitor's best value (val_acc or val_loss, see ``monitor``)
    val_acc: float  # validation accuracy after the last epoch
    val_loss: float  # validation loss after the last epoch
    train_acc: float  # training accuracy of the last epoch, against the unmixed labels
    train_loss: float  # mean training loss of the last epoch
    epochs: int  # epochs trained
    steps: int  # optimizer steps taken
    params: int  # parameters of the model
    flops: int | None  # forward FLOPs of one image (a multiply-add counts 2); None if an op cannot be counted
    train_time_s: float  # seconds spent in training steps over all attempts (validation excluded)
    train_images_per_s: float  # training throughput over train_time_s (images of every rank)
    infer_images_per_s: float  # inference throughput at ``infer_batch_size``, in the run's precision
    infer_latency_ms: float  # milliseconds per inference batch of ``infer_batch_size``
    peak_mem_mb: float  # peak memory of the run, of the kind ``peak_mem_kind`` says


class Summary(Metrics):
    """Everything ``summary.json`` holds: the metrics and what they were measured on."""

    monitor: str  # what "best" and early stopping watched: val_acc or val_loss
    stopped_by: str  # why training ended: epochs, max_steps, early_stop or time_budget
    infer_batch_size: int  # the fixed batch size of the inference figures
    peak_mem_kind: str  # cuda_allocated, or process_peak_rss on a CPU
    device: str  # the torch device rank 0 trained on (cpu, cuda:0)
    data_path: str  # how batches were made: device (resident on the device) or loader
    precision: str  # autocast dtype of training and inference: bf16, fp16 or fp32
    n_train: int  # images in the training split
    n_val: int  # images in the validation split
    n_test: int  # images in the test split
    init_run: NotRequired[str]  # init = "run:...": the run whose selected weights this one started from
    init_run_finished_at: NotRequired[float | None]  # when that run's training ended (stale once it retrains)


SUMMARY_METRICS: tuple[str, ...] = tuple(Metrics.__annotations__)

# what every epoch logs (``runner/train/loop.py`` ``close_epoch``; validation ones on the epochs
# that validate): the series a ``curves`` figure draws
EPOCH_METRICS: tuple[str, ...] = ("train_loss", "train_acc", "lr", "train_images_per_s", "val_loss", "val_acc",
                                  "epoch_time_s", "peak_mem_mb")
