"""`stratus.LocalCluster`: a scheduler and workers on this machine, as
Dask's `LocalCluster`.

It runs `stratus local` (the same command-line launcher, so the same
processes: one `stratus-scheduler` and `n_workers` `stratus-worker`s on
loopback, workers that die replaced as by Dask's nanny) and waits for the
scheduler file it writes once every worker has registered. Stopping it
(`close`, leaving the `with` block, the object being collected, or the
interpreter exiting) stops them all; if Python is killed outright, the
launcher gets SIGTERM from the kernel (`PR_SET_PDEATHSIG`) and its children
follow.

The binaries are looked up in `bin_dir`, `STRATUS_BIN_DIR`, next to a
`stratus` on `PATH`, then in the `target/release` and `target/debug`
folders of the checkout this package was built from.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import weakref
from pathlib import Path
from typing import Any, Dict, List, Optional, Union

from . import _stratus
from ._errors import ConnectionError, StratusError

_BINARIES = ("stratus", "stratus-scheduler", "stratus-worker")


def find_binaries(bin_dir: Optional[Union[str, os.PathLike]] = None) -> Path:
    """The `stratus` launcher to run, with `stratus-scheduler` and
    `stratus-worker` beside it (see the module doc for the search order)."""
    candidates: List[Path] = []
    if bin_dir is not None:
        candidates.append(Path(bin_dir))
    elif os.environ.get("STRATUS_BIN_DIR"):
        candidates.append(Path(os.environ["STRATUS_BIN_DIR"]))
    else:
        on_path = shutil.which("stratus")
        if on_path:
            candidates.append(Path(on_path).resolve().parent)
        target = Path(_stratus.source_dir()).parent / "target"
        candidates += [target / "release", target / "debug"]
    for folder in candidates:
        if all(os.access(folder / name, os.X_OK) for name in _BINARIES):
            return folder / "stratus"
    looked = ", ".join(str(c) for c in candidates)
    raise StratusError(
        f"the Stratus binaries ({', '.join(_BINARIES)}) are not in {looked}: build them "
        "with `cargo build --release --workspace --bins` in the Stratus checkout, or "
        "name their folder with bin_dir= or STRATUS_BIN_DIR"
    )


def _die_with_parent() -> None:
    """In the launcher's process before exec: SIGTERM it when Python dies."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, signal.SIGTERM, 0, 0, 0)
    except Exception:  # noqa: BLE001 - not Linux: stop() still stops it
        pass


def _stop(process: subprocess.Popen, log: Any, tempdir: Optional[str]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    log.close()
    if tempdir is not None:
        shutil.rmtree(tempdir, ignore_errors=True)


class LocalCluster:
    """A scheduler and `n_workers` workers with `threads_per_worker` threads
    each, as child processes on loopback. `memory_limit` is per worker (bytes
    or a size such as `"4GiB"`; default: 60% of the machine's memory, or of
    its cgroup's limit, divided among the workers). `data_dir` is where the scheduler keeps runs (default
    `stratus-data`, as `stratus local`); `data_roots` the folders workers
    may read and write (default: the current and temporary directories, or
    `STRATUS_DATA_ROOTS`)."""

    def __init__(
        self,
        n_workers: int = 2,
        threads_per_worker: int = 1,
        memory_limit: Union[int, str, None] = None,
        dashboard_address: Optional[str] = None,
        data_dir: Union[str, os.PathLike] = "stratus-data",
        data_roots: Optional[List[Union[str, os.PathLike]]] = None,
        scheduler_file: Union[str, os.PathLike, None] = None,
        bin_dir: Union[str, os.PathLike, None] = None,
        timeout: float = 60.0,
    ):
        self.n_workers = int(n_workers)
        self.threads_per_worker = int(threads_per_worker)
        launcher = find_binaries(bin_dir)
        self._tempdir: Optional[str] = tempfile.mkdtemp(prefix="stratus-cluster-")
        if scheduler_file is None:
            scheduler_file = os.path.join(self._tempdir, "scheduler.json")
        self.scheduler_file = os.path.abspath(os.fspath(scheduler_file))
        if os.path.exists(self.scheduler_file):
            os.remove(self.scheduler_file)
        command = [
            str(launcher),
            "local",
            "--workers",
            str(self.n_workers),
            "--threads-per-worker",
            str(self.threads_per_worker),
            "--scheduler-file",
            self.scheduler_file,
            "--data-dir",
            os.path.abspath(os.fspath(data_dir)),
        ]
        if memory_limit is not None:
            command += ["--memory-limit", str(memory_limit)]
        if dashboard_address is not None:
            command += ["--dashboard-address", str(dashboard_address)]
        for root in data_roots or []:
            command += ["--data-root", os.path.abspath(os.fspath(root))]
        env = dict(os.environ)
        # The launcher must not take a cluster of the caller's environment.
        for name in ("STRATUS_SCHEDULER_FILE", "STRATUS_SCHEDULER"):
            env.pop(name, None)
        self.log_path = os.path.join(self._tempdir, "stratus-local.log")
        log = open(self.log_path, "wb")
        self._process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None,
        )
        self._finalizer = weakref.finalize(self, _stop, self._process, log, self._tempdir)
        self._wait_ready(timeout)
        with open(self.scheduler_file) as f:
            self._info: Dict[str, Any] = json.load(f)

    def _log_tail(self) -> str:
        try:
            with open(self.log_path, "rb") as f:
                lines = f.read().decode("utf-8", "replace").strip().splitlines()
            return "\n".join(lines[-15:])
        except OSError:
            return ""

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not os.path.exists(self.scheduler_file):
            if self._process.poll() is not None:
                tail = self._log_tail()
                self.close()
                raise ConnectionError(
                    f"stratus local exited with status {self._process.returncode} before "
                    f"the cluster was ready:\n{tail}"
                )
            if time.monotonic() > deadline:
                tail = self._log_tail()
                self.close()
                raise ConnectionError(
                    f"the local cluster was not ready within {timeout:.0f} s:\n{tail}"
                )
            time.sleep(0.05)

    @property
    def scheduler_address(self) -> str:
        """`quic://127.0.0.1:PORT`."""
        return self._info["address"]

    @property
    def dashboard_link(self) -> str:
        """The live dashboard's URL."""
        return self._info["dashboard"]

    @property
    def status(self) -> str:
        """`running` or `closed`."""
        return "running" if self._process.poll() is None else "closed"

    def close(self) -> None:
        """Stop the scheduler and the workers."""
        self._finalizer()

    def __enter__(self) -> "LocalCluster":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        address = self._info["address"] if hasattr(self, "_info") else "starting"
        return (
            f"LocalCluster({address}, workers={self.n_workers}, "
            f"threads={self.n_workers * self.threads_per_worker}, status={self.status})"
        )

    def _repr_html_(self) -> str:
        import html

        link = html.escape(self.dashboard_link)
        return (
            "<div><h3>Stratus LocalCluster</h3><table>"
            f"<tr><th style='text-align:left'>Scheduler</th><td>{html.escape(self.scheduler_address)}</td></tr>"
            f"<tr><th style='text-align:left'>Dashboard</th><td><a href='{link}' target='_blank'>{link}</a></td></tr>"
            f"<tr><th style='text-align:left'>Workers</th><td>{self.n_workers}</td></tr>"
            f"<tr><th style='text-align:left'>Threads</th><td>{self.n_workers * self.threads_per_worker}</td></tr>"
            f"<tr><th style='text-align:left'>Status</th><td>{self.status}</td></tr>"
            "</table></div>"
        )
