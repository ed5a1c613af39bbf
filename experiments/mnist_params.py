"""The ``model`` section of ``experiment=mnist_ddp``, checked on the host before a launch
(see :mod:`runner.host.params`). Defaults live in ``conf/experiment/mnist_ddp.yaml``; this says what a
value may be. Imported on the host: pydantic and the standard library only."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class ModelParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    channels: int = Field(gt=0)
    hidden: int = Field(gt=0)
    lr: float = Field(gt=0)
    momentum: float = Field(ge=0, lt=1)
    dropout: float = Field(ge=0, lt=1)
    batch_size: int = Field(gt=0)  # per process
    train_samples: int | None = Field(gt=0)  # None: the whole training set
    channels_last: bool = False  # NHWC weights and images (torch.channels_last)
