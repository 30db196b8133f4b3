"""The generator's serving adapter: LoRA hot-reload between batches.

Owns the swap: an adapter is validated first (services.runtime.adapters.validate_adapter:
PEFT format, safetensors only, the base being served, every file matching the manifest), then
loaded by PEFT under a new name (which checks the weights' shapes), and only then made the
active adapter; on any failure the old one keeps serving. Not thread-safe: the generator loop
calls `load` between prompts, never during a search.
"""

from __future__ import annotations

import logging
from pathlib import Path

from services.runtime.adapters import AdapterError, validate_adapter

logger = logging.getLogger(__name__)


class AdapterSlot:
    """The model the engine runs, with at most one active LoRA adapter."""

    def __init__(self, base_model, base_name: str):
        self.model, self.base_name = base_model, base_name
        self.version = "base"

    def load(self, directory: str | Path, version: str | None = None) -> str:
        """Validate and activate an adapter; returns its version. Raises AdapterError."""
        from peft import PeftModel

        manifest = validate_adapter(directory, self.base_name)
        version = version or manifest.version
        if version != manifest.version:
            raise AdapterError(
                f"asked for version {version!r}, the manifest says {manifest.version!r}"
            )
        name = f"v{version}".replace(".", "_")
        try:
            if isinstance(self.model, PeftModel):
                self.model.load_adapter(str(directory), adapter_name=name)
            else:
                self.model = PeftModel.from_pretrained(
                    self.model, str(directory), adapter_name=name
                )
        except Exception as e:  # shape mismatch, bad config: PEFT raises many kinds
            if isinstance(self.model, PeftModel) and name in self.model.peft_config:
                self.model.delete_adapter(name)  # drop the half-loaded one; the old one serves
            raise AdapterError(f"adapter {directory} does not fit the model: {e}") from e
        previous = self.model.active_adapter
        self.model.set_adapter(name)
        if previous != name and previous in self.model.peft_config:
            self.model.delete_adapter(previous)
        self.model.eval()
        logger.info("serving adapter %s (was %s)", version, self.version)
        self.version = version
        return version
