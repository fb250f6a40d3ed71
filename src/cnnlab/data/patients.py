"""Patient ids as keyed hashes: the triage service stores and exports only HMAC-SHA256(key, id), and
training recognises a patient across data sets only if it hashes the ids it has with the same key.
The key comes from CNNLAB_SERVE_PATIENT_ID_KEY (the service's setting of that name)."""

from __future__ import annotations

import hashlib
import hmac
import os
import re

PATIENT_KEY_ENV = "CNNLAB_SERVE_PATIENT_ID_KEY"
_KEYED = re.compile(r"[0-9a-f]{64}")


def keyed_patient_id(secret: bytes, patient_id: str) -> str:
    return hmac.new(secret, patient_id.strip().encode("utf-8"), hashlib.sha256).hexdigest()


def looks_keyed(patient_id: str) -> bool:
    """Whether an id looks like `keyed_patient_id`'s output (a feedback export's) rather than a raw id."""
    return bool(_KEYED.fullmatch(patient_id))


def environment_key() -> bytes | None:
    key = os.environ.get(PATIENT_KEY_ENV, "")
    return key.encode() if key else None
