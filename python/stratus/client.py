"""`stratus.Client`: a connection to a cluster, as Dask's `distributed.Client`.

It finds the cluster the way the `stratus` command line does (a scheduler
file, or an address with the cluster's certificate files, or the
`STRATUS_*` variables), makes lazy frames (`read_parquet`, `get`), manages
persisted frames (`list`, `unpersist`) and logs to the run (`client.run`).
"""

from __future__ import annotations

import html
import io
import os
from typing import TYPE_CHECKING, Any, Dict, List, Mapping, Optional, Sequence, Union

from . import _stratus
from ._errors import BadInputError

if TYPE_CHECKING:  # pragma: no cover
    from .cluster import LocalCluster
    from .dataframe import DataFrame


def _storage_pairs(options: Optional[Mapping[str, Any]]) -> List[tuple]:
    """Dask-style `storage_options` as the (key, value) strings the cluster
    takes (the names of the object_store crate: account_name, account_key,
    sas_token, endpoint, aws_access_key_id, region, allow_http, ...)."""
    if not options:
        return []
    pairs = []
    for key, value in options.items():
        if isinstance(value, bool):
            value = "true" if value else "false"
        pairs.append((str(key), str(value)))
    return pairs


def _format_bytes(n: int) -> str:
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:.2f} {unit}" if unit != "B" else f"{n} B"
        n /= 1000
    return f"{n} B"  # pragma: no cover


class Run:
    """The run a client logs to (Azure ML's `run.log` / `run.log_image`):
    numbers and images are kept by the scheduler and served at
    `<dashboard>/api/runs/<id>`."""

    def __init__(self, client: "Client", name: str):
        self._client = client
        self.name = name
        self.id: Optional[str] = None

    def log(self, name: str, value: float) -> str:
        """Log a number under `name`; returns the run's id."""
        self.id = self._client._native.log_metrics([(str(name), float(value))])
        return self.id

    def log_image(self, name: str, image: Any) -> str:
        """Store an image with the run: a matplotlib figure (saved as PNG), PNG
        bytes, or the path of a PNG file. `name` gets `.png` if it has no
        extension; returns the run's id."""
        if hasattr(image, "savefig"):
            buffer = io.BytesIO()
            image.savefig(buffer, format="png")
            data = buffer.getvalue()
        elif isinstance(image, (bytes, bytearray, memoryview)):
            data = bytes(image)
        elif isinstance(image, (str, os.PathLike)):
            with open(image, "rb") as f:
                data = f.read()
        else:
            raise BadInputError(
                f"log_image({name!r}): expected a matplotlib figure, PNG bytes or a "
                f"PNG file's path, not {type(image).__name__}"
            )
        if not data.startswith(b"\x89PNG\r\n\x1a\n"):
            raise BadInputError(f"log_image({name!r}): the image is not a PNG")
        if "." not in name:
            name += ".png"
        self.id = self._client._native.log_artifact(name, "image/png", data)
        return self.id

    @property
    def url(self) -> Optional[str]:
        """Where the run is served (once something was logged)."""
        if self.id is None:
            return None
        return self._client.dashboard_link.rstrip("/") + f"/api/runs/{self.id}"

    def __repr__(self) -> str:
        return f"<Run: {self.name}>"


class Client:
    """A connection to a Stratus cluster.

    `Client()` uses `STRATUS_SCHEDULER_FILE` (or `STRATUS_SCHEDULER` with
    `STRATUS_TLS_CA`, `STRATUS_TLS_CERT`, `STRATUS_TLS_KEY`);
    `Client(cluster)` connects to a `LocalCluster`; `run` names the run this
    session's work is logged to (default `STRATUS_RUN`, else none).
    """

    def __init__(
        self,
        scheduler_file: Union[str, os.PathLike, "LocalCluster", None] = None,
        address: Optional[str] = None,
        tls_ca: Optional[str] = None,
        tls_cert: Optional[str] = None,
        tls_key: Optional[str] = None,
        run: Optional[str] = None,
    ):
        # Client(cluster), as Dask's Client(LocalCluster()).
        if hasattr(scheduler_file, "scheduler_file"):
            self.cluster = scheduler_file
            scheduler_file = scheduler_file.scheduler_file
        else:
            self.cluster = None
        self._native = _stratus.Client(
            scheduler_file=os.fspath(scheduler_file) if scheduler_file is not None else None,
            address=address,
            tls_ca=tls_ca,
            tls_cert=tls_cert,
            tls_key=tls_key,
            run=run,
        )
        self._dashboard: Optional[str] = None
        # Kept for repr once closed (the native client forgets it on close).
        self._address: Optional[str] = self._native.address

    # -- the cluster -------------------------------------------------------

    @property
    def address(self) -> Optional[str]:
        """The scheduler's address, `quic://HOST:PORT`."""
        return self._native.address or self._address

    @property
    def run(self) -> Optional[Run]:
        """The run this client logs to, or None when no run is named."""
        name = self._native.run
        if name is None:
            return None
        if getattr(self, "_run", None) is None or self._run.name != name:
            self._run = Run(self, name)
        return self._run

    def scheduler_info(self) -> Dict[str, Any]:
        """address, dashboard, workers, threads, memory_limit, memory_used."""
        info = self._native.info()
        self._dashboard = info["dashboard"]
        return info

    @property
    def dashboard_link(self) -> str:
        """The live dashboard's URL."""
        if self._dashboard is None:
            self.scheduler_info()
        return self._dashboard

    def wait_for_workers(self, n_workers: int = 1, timeout: float = 60.0) -> None:
        """Wait until at least `n_workers` workers are registered."""
        self._native.wait_for_workers(int(n_workers), float(timeout))

    # -- frames ------------------------------------------------------------

    def read_parquet(
        self,
        path: Union[str, os.PathLike],
        columns: Optional[Sequence[str]] = None,
        storage_options: Optional[Mapping[str, Any]] = None,
    ) -> "DataFrame":
        """A lazy frame over a Parquet file, directory, glob
        (`DIR/year=*/month=*/*.parquet`) or URL (`az://`, `abfss://`, `s3://`,
        `https://ACCOUNT.blob.core.windows.net/...`). Hive `key=value`
        directories become columns. `storage_options` go with every request
        on this frame, encrypted, and are never logged."""
        from .dataframe import DataFrame

        path = os.fspath(path)
        if "://" not in path:
            path = os.path.abspath(path)
        return DataFrame(
            self,
            source=path,
            persisted=False,
            columns=list(columns) if columns is not None else None,
            steps=[],
            storage=_storage_pairs(storage_options),
        )

    def get(self, name: str) -> "DataFrame":
        """The frame persisted as `name` (by this or any other client)."""
        from .dataframe import DataFrame

        frames = {f["name"] for f in self._native.list()}
        if name not in frames:
            from ._errors import NotFoundError

            raise NotFoundError(f"no persisted frame named '{name}'")
        return DataFrame(self, source=name, persisted=True, columns=None, steps=[], storage=[])

    def list(self) -> List[Dict[str, Any]]:
        """The persisted frames: name, source, rows, bytes, partitions."""
        return self._native.list()

    def unpersist(self, name: Union[str, "DataFrame"]) -> None:
        """Release a persisted frame from the workers' RAM."""
        if not isinstance(name, str):
            name = name.name
        self._native.unpersist(name)

    # -- life --------------------------------------------------------------

    def close(self) -> None:
        """Close the connection (requests in flight are cancelled)."""
        self._native.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def _summary(self) -> Optional[Dict[str, Any]]:
        if self._native.closed:
            return None
        try:
            return self.scheduler_info()
        except Exception:  # noqa: BLE001 - a repr must not raise
            return None

    def __repr__(self) -> str:
        info = self._summary()
        if info is None:
            return f"<Client: {self.address} closed>" if self._native.closed else "<Client: unreachable>"
        return (
            f"<Client: {info['address']} workers={info['workers']} "
            f"threads={info['threads']} memory={_format_bytes(info['memory_limit'])}>"
        )

    def _repr_html_(self) -> str:
        info = self._summary()
        if info is None:
            return f"<p><b>Client</b>: {html.escape(repr(self))}</p>"
        link = html.escape(info["dashboard"])
        run = self.run
        rows = [
            ("Scheduler", html.escape(info["address"])),
            ("Dashboard", f'<a href="{link}" target="_blank">{link}</a>'),
            ("Workers", str(info["workers"])),
            ("Threads", str(info["threads"])),
            (
                "Memory",
                f"{_format_bytes(info['memory_used'])} used of "
                f"{_format_bytes(info['memory_limit'])}",
            ),
            ("Run", html.escape(run.name) if run else "none"),
        ]
        body = "".join(
            f'<tr><th style="text-align:left">{k}</th><td style="text-align:left">{v}</td></tr>'
            for k, v in rows
        )
        return f"<div><h3>Stratus Client</h3><table>{body}</table></div>"
