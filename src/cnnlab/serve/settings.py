"""What one service instance needs to know, from arguments or `CNNLAB_SERVE_*` variables."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

DB_FILE = "serve.db"


class ServeSettings(BaseSettings):
    """Settings of one service instance; nothing is read until an instance is made."""

    model_config = SettingsConfigDict(env_prefix="CNNLAB_SERVE_", extra="forbid")

    runs: list[Path] = Field(default_factory=list, description="Bundle directories to load.")
    state_dir: Path = Field(Path("serve-state"), description="Database (SQLite default) and kept images.")
    db_url: str | None = Field(None, description="Any SQLAlchemy URL; default: a SQLite file in state_dir.")
    device: str = Field(
        "auto", description="Where the models run: auto (a CUDA GPU if there is one, else the CPU), cpu, cuda, cuda:N."
    )
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    review_threshold: float = Field(0.8, ge=0.0, le=1.0, description="Calibrated confidence below it needs review.")
    operating_margin: float = Field(
        0.05, ge=0.0, le=0.5, description="A positive score this close to the card's operating point needs review."
    )
    max_upload_bytes: int = Field(20 * 1024 * 1024, gt=0)
    request_timeout_s: float = Field(30.0, gt=0)
    db_busy_timeout_s: float = Field(
        5.0, gt=0, description="How long a write waits for another writer's lock before the request answers 503."
    )
    max_concurrency: int = Field(4, ge=1, description="Requests under /v1 at once; more are answered 503 at once.")
    rate_limit_per_minute: int = Field(
        120,
        ge=0,
        description="Requests one API key may make in any 60 s; more are answered 429 with Retry-After. Counted "
        "from the audit log in the database, so the limit is shared by every worker process and machine on it. "
        "0: no limit.",
    )
    gate_data: Path | None = Field(
        None,
        description="A labelled class folder (patients the models never trained on) on which the promotion gate "
        "compares a candidate with the active version before it may serve; without it, activation needs an "
        "override reason.",
    )
    gate_resamples: int = Field(1000, ge=100, description="Paired bootstrap resamples of the promotion gate.")
    retention_days: float | None = Field(
        None,
        gt=0,
        description="Kept images and predictions older than this are deleted by `cnnlab purge` (which reads it "
        "from CNNLAB_SERVE_RETENTION_DAYS too). None: kept until purged by hand.",
    )
    patient_id_key: str | None = Field(
        None,
        min_length=16,
        description="The key patient ids are hashed with (HMAC-SHA256); set the same one on every service whose "
        "exports must match patients. Default: a random key the service makes once and keeps in its database.",
    )
    public_docs: bool = False
    public_metrics: bool = False

    def database_url(self) -> str:
        return self.db_url or f"sqlite:///{(self.state_dir / DB_FILE).resolve()}"

    @property
    def images_dir(self) -> Path:
        """Decoded, metadata-free PNGs of predicted images, for review and retraining."""
        return self.state_dir / "images"
