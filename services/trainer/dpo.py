"""One DPO update with LoRA on a vision-language model, through TRL's DPOTrainer and PEFT.

Owns the choice of reference model (Eq. 5: the reference at iteration t is the model of
iteration t-1). The policy starts from the previous version's adapter, loaded trainable as
PEFT's "default" adapter, and DPOTrainer is given no ref_model: TRL then copies that adapter,
frozen, as a second adapter named "ref" and computes the reference log-probs with it. So the
reference is exactly base + adapter(t-1), the published adapter stays one file set relative
to the base model (what the generators load), and no second copy of the base model is held
in memory. Merging adapter(t-1) into the base instead would also give the right reference,
but every published adapter would then depend on a chain of merged bases. At the first
update there is no previous adapter: a fresh LoRA (B = 0) makes "ref" equal the base model.

Only the language model's linear layers get LoRA (DPOSettings.target_modules); the vision
tower and projector stay frozen. One base model serves every update of a process (BaseModel:
the LoRA layers of an update are taken off again before the next). The dataset holds image
paths; the images are read as each batch is collated (LazyImages). Does not know Redis or the
adapter store: it gets examples and a loader for images, and returns the trained PEFT model
and its training log.
"""

from __future__ import annotations

import gc
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from csr.config import DPOSettings
from csr.training import DPOExample
from services.runtime.vlm import chat_prompt

logger = logging.getLogger(__name__)


class UpdateInterrupted(RuntimeError):
    """The update was asked to stop; a checkpoint was saved and nothing was published."""


def stop_callback(stop):
    """A TrainerCallback that, once stop (a threading.Event) is set, saves a checkpoint at the
    end of the step and ends training; the update then resumes from it next time."""
    from transformers import TrainerCallback

    class Stop(TrainerCallback):
        interrupted = False

        def on_step_end(self, args, state, control, **kwargs):
            if stop.is_set():
                Stop.interrupted = True
                control.should_save = True
                control.should_training_stop = True

    return Stop()


@dataclass
class UpdateResult:
    model: object  # the PeftModel: "default" trained, "ref" the frozen reference
    log: list[dict]  # TRL's log history (one entry per logged step, then a summary)
    metrics: dict[str, float]  # the last logged value of each training metric
    steps: int


class BaseModel:
    """One base model for every update of the process, loaded at the first.

    An update wraps the model in place: PEFT puts LoRA layers ("default", and TRL's frozen
    copy "ref") into its linear layers, and TRL patches its forward with a fused LM head and
    hooks its input embeddings. `release` takes all of that off again: the LoRA layers are
    unloaded unmerged, so the weights are those loaded, and the next update wraps the same
    model afresh. After a failed update the model is dropped and loaded again when needed.
    """

    def __init__(self, load: Callable[[], object]):
        self._load = load
        self.model: Any = None
        self.loads = 0  # times the base model was loaded
        self._trained: Any = None  # the last update's PeftModel, until released

    def get(self):
        """The base model, bare (the last update's wrapping released)."""
        self.release()
        if self.model is None:
            self.model = self._load()
            self.loads += 1
        return self.model

    def hold(self, trained) -> None:
        """The PeftModel an update made of the base model; released by the next get()."""
        self._trained = trained

    def release(self) -> None:
        if self._trained is None:
            return
        trained, self._trained = self._trained, None
        trained.unload()  # the LoRA layers out, unmerged
        self.model.__dict__.pop("forward", None)  # TRL's fused LM head, set on the instance
        if getattr(self.model, "_require_grads_hook", None) is not None:
            self.model.disable_input_require_grads()
        _free_memory()

    def drop(self) -> None:
        """Forget the model (after a failed update, which may have left it half wrapped)."""
        self.model = self._trained = None
        _free_memory()


def _free_memory() -> None:
    gc.collect()  # the trainer, its optimizer state and the LoRA layers are cycles
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def policy_model(base_model, previous_adapter: str | Path | None, dpo: DPOSettings):
    """The model to train: the previous adapter (trainable) on the base, or a fresh LoRA."""
    from peft import LoraConfig, PeftModel, get_peft_model

    if previous_adapter is not None:
        return PeftModel.from_pretrained(base_model, str(previous_adapter), is_trainable=True)
    config = LoraConfig(
        r=dpo.lora_r,
        lora_alpha=dpo.lora_alpha,
        lora_dropout=dpo.lora_dropout,
        target_modules=dpo.target_modules,
        task_type=None,
    )
    return get_peft_model(base_model, config)


def build_dataset(examples: Sequence[DPOExample], processor):
    """TRL's vision preference columns: images (their paths, read at collate time by
    LazyImages), prompt (in the chat template), chosen, rejected."""
    from datasets import Dataset

    return Dataset.from_list(
        [
            {
                "images": [e.image],
                "prompt": chat_prompt(processor, e.prompt),
                "chosen": e.chosen,
                "rejected": e.rejected,
            }
            for e in examples
        ]
    )


class LazyImages:
    """TRL's vision preference collator, given each batch's images read from their paths
    (load_image) as it is collated: the dataset holds paths, never decoded or re-encoded
    images, so its memory does not grow with the images."""

    def __init__(self, processor, load_image: Callable[[str], object]):
        from trl.trainer.dpo_trainer import DataCollatorForVisionPreference

        self.collate = DataCollatorForVisionPreference(processor=processor)
        self.load_image = load_image

    def __call__(self, examples: list[dict]) -> dict:
        return self.collate(
            [{**e, "images": [self.load_image(p) for p in e["images"]]} for e in examples]
        )


def dpo_config(
    dpo: DPOSettings, output_dir: Path, *, seed: int, checkpoint_steps: int, device: str
):
    from trl import DPOConfig

    on_cuda = device.startswith("cuda")
    return DPOConfig(
        output_dir=str(output_dir),
        beta=dpo.beta,
        learning_rate=dpo.learning_rate,
        lr_scheduler_type=dpo.lr_scheduler,
        warmup_steps=dpo.warmup_ratio,  # < 1: a ratio
        num_train_epochs=dpo.epochs,
        per_device_train_batch_size=dpo.batch_size,
        gradient_accumulation_steps=dpo.gradient_accumulation_steps,
        max_length=None,
        logging_steps=1,
        seed=seed,
        data_seed=seed,
        use_cpu=not on_cuda,
        bf16=on_cuda,
        save_strategy="steps" if checkpoint_steps else "no",
        save_steps=checkpoint_steps or 500,
        save_total_limit=1,
        report_to=[],
        disable_tqdm=True,
    )


def tensorboard_callback(logging_dir: Path):
    """TRL's scalars (loss, rewards/margins, logps/chosen, ...) into TensorBoard at logging_dir."""
    from torch.utils.tensorboard import SummaryWriter
    from transformers.integrations import TensorBoardCallback

    return TensorBoardCallback(tb_writer=SummaryWriter(log_dir=str(logging_dir)))


def train_update(
    base_model,
    processor,
    previous_adapter: str | Path | None,
    examples: Sequence[DPOExample],
    load_image: Callable[[str], object],
    dpo: DPOSettings,
    output_dir: str | Path,
    *,
    seed: int = 0,
    logging_dir: str | Path | None = None,
    checkpoint_steps: int = 0,
    resume: bool = False,
    callbacks: Sequence = (),
    stop=None,
) -> UpdateResult:
    """Train one DPO update; with resume, continue from the newest checkpoint in output_dir.
    If `stop` (a threading.Event) is set during training, save a checkpoint and raise
    UpdateInterrupted."""
    from trl import DPOTrainer

    if not examples:
        raise ValueError("a DPO update needs at least one preference pair")
    output_dir = Path(output_dir)
    device = str(next(base_model.parameters()).device)
    torch.manual_seed(seed)  # before the fresh LoRA's random A: the same seed, the same update
    model = policy_model(base_model, previous_adapter, dpo)
    args = dpo_config(dpo, output_dir, seed=seed, checkpoint_steps=checkpoint_steps, device=device)
    callbacks = list(callbacks)
    stopper = stop_callback(stop) if stop is not None else None
    if stopper is not None:
        callbacks.append(stopper)
    if logging_dir is not None:
        callbacks.append(tensorboard_callback(Path(logging_dir) / output_dir.name))
    trainer = DPOTrainer(
        model=model,
        args=args,
        processing_class=processor,
        train_dataset=build_dataset(examples, processor),
        data_collator=LazyImages(processor, load_image),
        callbacks=callbacks,
    )
    checkpoint = resume and any(output_dir.glob("checkpoint-*"))
    trainer.train(resume_from_checkpoint=True if checkpoint else None)
    if stopper is not None and stopper.interrupted:
        raise UpdateInterrupted(
            f"update stopped at step {trainer.state.global_step} of "
            f"{trainer.state.max_steps}; checkpoint in {output_dir}"
        )
    log = list(trainer.state.log_history)
    metrics: dict[str, float] = {}
    for entry in log:
        metrics.update({k: float(v) for k, v in entry.items() if isinstance(v, (int, float))})
    return UpdateResult(trainer.model, log, metrics, trainer.state.global_step)


def save_adapter(model, directory: str | Path) -> None:
    """Write the trained "default" adapter alone, in PEFT format with safetensors."""
    model.save_pretrained(str(directory), selected_adapters=["default"], safe_serialization=True)
