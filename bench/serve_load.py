"""Load on the triage service over loopback: latency percentiles, throughput, status counts, and
that the audit log holds one row per request.

It starts `cnnlab serve` on 127.0.0.1 (a free port, a fresh state directory) in a subprocess, so the
clients' threads do not share the server's interpreter, creates a clinician key, then drives
/v1/predict with N concurrent clients (N = 1, 4, 16) for `--seconds` each, without and with
`?explain=gradcam`, posting real chest X-rays. The service's concurrency limit is raised to the
largest N: the model lock queues requests, so a 503 here would be a fault, not back-pressure.

    python bench/serve_load.py                                   # runs/lite0-xray, 30 s per cell
    python bench/serve_load.py --run runs/lite0-xray --seconds 10 --concurrency 1,4
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np

from cnnlab.serve.security import Role, create_key
from cnnlab.serve.settings import DB_FILE
from cnnlab.serve.store import Store

HOST = "127.0.0.1"
ROOT = Path(__file__).resolve().parents[1]
IMAGES = ROOT.parent / "shared" / "data" / "chest-xray" / "test"
MAX_REQUESTS_PER_CLIENT = 100_000
"""A bound besides time, so a mistake can never loop without end."""


@dataclass
class Cell:
    concurrency: int
    explain: bool
    latencies: list[float] = field(default_factory=list)
    statuses: Counter[int] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    seconds: float = 0.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def start_server(run: Path, state: Path, port: int, concurrency: int) -> subprocess.Popen[bytes]:
    # One key sends every request: the per-key rate limit would cap the load this measures.
    env = os.environ | {"CNNLAB_SERVE_MAX_CONCURRENCY": str(concurrency), "CNNLAB_SERVE_RATE_LIMIT_PER_MINUTE": "0"}
    cmd = [sys.executable, "-c", "from cnnlab.cli import main; main()", "serve", str(run), "--host", HOST,
           "--port", str(port), "--state-dir", str(state)]  # fmt: skip
    server = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"the server exited: {server.stderr.read().decode()[-2000:] if server.stderr else ''}")
        try:
            if httpx.get(f"http://{HOST}:{port}/readyz", timeout=2).status_code == 200:
                return server
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    server.kill()
    raise SystemExit("the server did not become ready in 120 s")


def drive(base: str, key: str, images: list[bytes], cell: Cell, seconds: float) -> None:
    query = "?explain=gradcam" if cell.explain else ""
    lock = threading.Lock()
    deadline = time.monotonic() + seconds

    def client(worker: int) -> None:
        with httpx.Client(base_url=base, headers={"X-API-Key": key}, timeout=120) as http:
            for i in range(MAX_REQUESTS_PER_CLIENT):
                if time.monotonic() >= deadline:
                    return
                data = images[(worker * 7919 + i) % len(images)]
                start = time.perf_counter()
                try:
                    status = http.post(f"/v1/predict{query}", files={"file": ("x.png", data, "image/png")}).status_code
                except httpx.HTTPError as exc:
                    with lock:
                        cell.errors[exc.__class__.__name__] += 1
                    continue
                with lock:
                    cell.latencies.append(time.perf_counter() - start)
                    cell.statuses[status] += 1

    started = time.perf_counter()
    threads = [threading.Thread(target=client, args=(w,), daemon=True) for w in range(cell.concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(seconds + 180)  # a request in flight at the deadline still finishes
    cell.seconds = time.perf_counter() - started


def predict_audit_rows(store: Store) -> int:
    return sum(1 for r in store.audit_rows() if r.route == "/v1/predict")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", type=Path, default=ROOT / "runs" / "lite0-xray")
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--concurrency", default="1,4,16")
    parser.add_argument("--images", type=Path, default=IMAGES)
    parser.add_argument("--max-images", type=int, default=64)
    args = parser.parse_args()
    if not (args.run / "model.json").is_file():
        raise SystemExit(f"{args.run}: not a bundle (train one: cnnlab train --recipe lite0-xray)")
    levels = [int(c) for c in args.concurrency.split(",")]
    files = sorted(p for p in args.images.rglob("*") if p.suffix.lower() in (".png", ".jpg", ".jpeg"))
    if not files:
        raise SystemExit(f"no images under {args.images}")
    images = [p.read_bytes() for p in files[: args.max_images]]

    with tempfile.TemporaryDirectory(prefix="serve-load-") as tmp:
        state = Path(tmp) / "state"
        state.mkdir()
        store = Store(f"sqlite:///{state / DB_FILE}")
        key = create_key(store, Role.clinician, "serve-load")[1]
        port = free_port()
        server = start_server(args.run, state, port, max(levels))
        base = f"http://{HOST}:{port}"
        print(f"{args.run.name} on {base}, {len(images)} images, {args.seconds:g} s per cell", flush=True)
        header = f"{'explain':>8} {'conc':>4} {'requests':>8} {'req/s':>7} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8}"
        print(header + "  statuses / errors   audit", flush=True)
        failed = False
        try:
            for explain in (False, True):
                for level in levels:
                    cell = Cell(level, explain)
                    before = predict_audit_rows(store)
                    drive(base, key, images, cell, args.seconds)
                    sent = sum(cell.statuses.values())
                    audited = predict_audit_rows(store) - before
                    for _ in range(50):  # the audit row is written just after the response
                        if audited >= sent:
                            break
                        time.sleep(0.1)
                        audited = predict_audit_rows(store) - before
                    ms = np.percentile(np.array(cell.latencies) * 1000, [50, 95, 99]) if cell.latencies else [0] * 3
                    fives = sum(n for s, n in cell.statuses.items() if s >= 500)
                    ok = fives == 0 and not cell.errors and audited == sent
                    failed |= not ok
                    statuses = " ".join(f"{s}:{n}" for s, n in sorted(cell.statuses.items()))
                    errors = " ".join(f"{e}:{n}" for e, n in cell.errors.items())
                    print(
                        f"{'gradcam' if explain else '-':>8} {level:>4} {sent:>8} {sent / cell.seconds:>7.1f} "
                        f"{ms[0]:>8.0f} {ms[1]:>8.0f} {ms[2]:>8.0f}  {statuses} {errors}  "
                        f"{audited}/{sent} {'ok' if ok else 'FAIL'}",
                        flush=True,
                    )
        finally:
            server.terminate()
            try:
                server.wait(30)
            except subprocess.TimeoutExpired:
                server.kill()
            store.close()
    if failed:
        raise SystemExit("FAIL: a 5xx, a transport error, or audit rows != requests")


if __name__ == "__main__":
    main()
