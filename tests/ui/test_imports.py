"""The page is a thin client: importing it loads no torch and nothing of the service."""

from __future__ import annotations

import subprocess
import sys


def test_the_page_imports_no_torch_and_no_service() -> None:
    probe = (
        "import sys, cnnlab.ui.views, cnnlab.ui.launch; "
        "print(sorted(m for m in sys.modules if m == 'torch' or m.startswith(('cnnlab.serve', 'cnnlab.bundle'))))"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
