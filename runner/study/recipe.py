"""The training recipe: every key of ``[defaults]`` (and of ``train.*`` dotted keys).

Torch-free so ``runner plan`` validates recipes without importing torch; the
training loop (``runner/train/loop.py``) reads an instance of ``Recipe``.

Two kinds of field. Recipe fields say *what* is trained and are part of a run's identity:
changing one makes a new run. Engine fields (``engine_field``: precision, compile,
channels_last, fused optimizers, data path, checkpoint interval) say *how fast* it is
trained; they are recorded in each attempt, not in the id, so switching bf16 on does not
retrain finished runs. A field at its default is left out of the id, so adding a field
whose default keeps the old behaviour does not retrain anything (``tests/test_identity.py``
pins the defaults).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from datasets import Augmentation, check_auto_augment


def engine_field(default: Any, description: str, **constraints: Any) -> Any:
    """A field that changes speed, not results: left out of run ids, recorded per attempt."""
    return Field(default, description=description, json_schema_extra={"identity": False}, **constraints)


def is_identity(field) -> bool:
    return (field.json_schema_extra or {}).get("identity", True) is not False


class Recipe(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, defer_build=True)

    epochs: int = Field(10, ge=1)
    batch_size: int = Field(128, ge=1)
    max_steps: int | None = Field(None, ge=1, description="stop after this many optimizer steps (the schedule ends there)")
    accum_steps: int = Field(1, ge=1, description="split each batch into this many micro-batches (same optimizer step)")
    optimizer: Literal["adamw", "adam", "sgd", "lamb"] = Field(
        "adamw", description="adamw: decoupled weight decay; adam: weight_decay is an L2 term in the gradient "
                             "(torch.optim.Adam, as the dual-attention reference)")
    lr: float = Field(1e-3, gt=0.0)
    weight_decay: float = Field(0.05, ge=0.0, description="on the parameters the architecture's reference decays "
                                                           "(timm's rule by default: not norms, biases, embeddings)")
    momentum: float = Field(0.9, ge=0.0, lt=1.0, description="sgd only")
    nesterov: bool = Field(True, description="sgd only, when momentum > 0")
    schedule: Literal["cosine", "step", "constant"] = Field("cosine", description="lr after the warm-up")
    warmup_epochs: float = Field(0.0, ge=0.0, description="linear warm-up from 0 to lr")
    min_lr: float = Field(0.0, ge=0.0, description="floor of the cosine schedule")
    decay_epochs: float | list[float] = Field(
        30.0, description='schedule = "step": multiply lr by decay_rate every N epochs, or at each listed epoch')
    decay_rate: float = Field(0.1, gt=0.0, le=1.0, description='schedule = "step": factor per decay')
    label_smoothing: float = Field(0.0, ge=0.0, lt=1.0)
    grad_clip: float | None = Field(None, gt=0.0, description="max global gradient norm")
    ema_decay: float | None = Field(None, gt=0.0, lt=1.0,
                                    description="keep an EMA of the weights (e.g. 0.9998); validation and test use it")
    eval_every: int = Field(1, ge=1, description="validate every N epochs (and after the last)")
    monitor: Literal["val_acc", "val_loss"] = Field("val_acc", description="what 'best' and early stopping watch")
    patience: int | None = Field(None, ge=1, description="stop after N validations without improvement of monitor")
    min_delta: float = Field(0.0, ge=0.0, description="smallest change of monitor that counts as improvement")
    time_budget_min: float | None = Field(None, gt=0.0, description="stop training after this many minutes (all attempts)")
    select: Literal["best", "last"] = Field(
        "best", description="which checkpoint test_acc/test_loss report: best on monitor, or last epoch"
    )

    # where the weights start, what trains (runner/train/finetune.py); a run:<selector> init makes the
    # selected run an upstream of this one (runner/plan/stages.py resolves it to "run:<run id>")
    init: str = Field("scratch", description='"scratch", "pretrained" (timm weights) or "run:<selector>": '
                                             "the selected weights of another run of the study")
    freeze: Literal["none", "backbone", "all_but_head"] = Field(
        "none", description='"backbone": train only the head and the norm before it; "all_but_head": only the head')
    head_lr: float | None = Field(None, gt=0.0, description="learning rate of the classifier head; default lr")

    # augmentation of the training split (see datasets.Augmentation); evaluation is never augmented
    crop: Literal["none", "pad", "resized"] = Field(
        "none", description='"pad": pad and crop back at random (CIFAR); "resized": random-resized crop (ImageNet)')
    crop_padding: int = Field(4, ge=0, description='pixels of zero padding for crop = "pad"')
    crop_scale: float = Field(0.08, gt=0.0, le=1.0, description='smallest area share of crop = "resized"')
    hflip: float = Field(0.0, ge=0.0, le=1.0, description="probability of a horizontal flip")
    auto_augment: str | None = Field(None, description='torchvision AutoAugment policy "cifar10", "svhn", '
                                                       '"imagenet", or timm\'s: "rand-m9-mstd0.5-inc1", "original", ...')
    mixup: float = Field(0.0, ge=0.0, description="Mixup alpha; 0 = off")
    cutmix: float = Field(0.0, ge=0.0, description="CutMix alpha; 0 = off")
    mix_prob: float = Field(1.0, gt=0.0, le=1.0, description="probability a batch is mixed")
    mix_switch_prob: float = Field(0.5, ge=0.0, le=1.0, description="share of mixed batches that use CutMix when both are on")

    # engine: how fast, not what (not in the run id; recorded in the attempt)
    precision: Literal["auto", "bf16", "fp16", "fp32"] = engine_field(
        "auto", "autocast dtype; auto = bf16 on CUDA, fp32 on CPU")
    compile: bool = engine_field(False, "torch.compile the model")
    channels_last: Literal["auto"] | bool = engine_field("auto", "auto = on CUDA for convolutional models")
    fused: Literal["auto"] | bool = engine_field("auto", "fused optimizer kernels; auto = on CUDA when available")
    data_path: Literal["auto", "device", "loader"] = engine_field(
        "auto", "auto = device-resident batches when the data and augmentation allow")
    checkpoint_every: int = engine_field(1, "epochs between checkpoints (0: only when stopped by a signal)", ge=0)
    gpus_per_run: int = engine_field(1, "DistributedDataParallel processes (GPUs) of one run; batch_size is the "
                                        "global batch, split evenly among them", ge=1)

    @field_validator("auto_augment")
    @classmethod
    def _known_policy(cls, value):
        problem = value is not None and check_auto_augment(value)
        if problem:
            raise ValueError(problem)
        return value

    @field_validator("init")
    @classmethod
    def _known_init(cls, value):
        if value in ("scratch", "pretrained") or (value.startswith("run:") and value[4:].strip()):
            return value
        raise ValueError(f'init: "scratch", "pretrained" or "run:<matrix or KEY=VALUE,...>", got "{value}"')

    @field_validator("decay_epochs")
    @classmethod
    def _positive_decays(cls, value):
        values = value if isinstance(value, list) else [value]
        if not values or any(v <= 0 for v in values) or values != sorted(values):
            raise ValueError("decay_epochs: a positive number of epochs, or an increasing list of epochs")
        return value

    @model_validator(mode="after")
    def _consistent(self):
        if self.mixes and self.batch_size % (2 * self.gpus_per_run):  # each process mixes its share of the batch
            raise ValueError(f"batch_size: Mixup/CutMix pair each image with another, so it must be even "
                             f"on each of the {self.gpus_per_run} process(es), got {self.batch_size}")
        if self.batch_size % (self.accum_steps * self.gpus_per_run):
            if self.gpus_per_run > 1:
                raise ValueError(f"gpus_per_run: {self.gpus_per_run} processes times accum_steps {self.accum_steps} "
                                 f"must divide batch_size ({self.batch_size}), the global batch")
            raise ValueError(f"accum_steps: must divide batch_size ({self.batch_size}) into equal micro-batches, "
                             f"got {self.accum_steps}")
        return self

    @property
    def micro_batch(self) -> int:
        """Images per forward pass of one process."""
        return self.batch_size // (self.accum_steps * self.gpus_per_run)

    def augmentation(self) -> Augmentation:
        return Augmentation(crop=self.crop, crop_padding=self.crop_padding, crop_scale=self.crop_scale,
                            hflip=self.hflip, auto_augment=self.auto_augment)

    @property
    def mixes(self) -> bool:
        return self.mixup > 0 or self.cutmix > 0
