"""``SimulatedOrganization``: generate, load and run a simulated AWS Organization.

Two ways to reach it, both through real boto3 clients:

- in process (``SimulatedOrganization(spec).in_process()``): moto's ``mock_aws`` intercepts
  every botocore request of this process; fastest, for tests;
- over loopback HTTP (``.serve(port=0)``): a threaded moto server on 127.0.0.1; any client,
  the AWS CLI included, reaches it through ``AWS_ENDPOINT_URL``.
"""
from __future__ import annotations

import contextlib
import os
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
from moto import mock_aws
from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
from werkzeug.serving import BaseWSGIServer, make_server

from crawler.sim import patches, truth
from crawler.sim.advisor import delete_entity
from crawler.sim.catalog import ServiceCatalog, load_catalog
from crawler.sim.faults import FaultPlan
from crawler.sim.generator import OrgSpec, generate
from crawler.sim.loader import REGION, Credentials, load_organization, reset_backends
from crawler.sim.model import OrganizationModel
from crawler.sim.state import SimState, activate, deactivate

LOOPBACK = "127.0.0.1"


class SimulatedOrganization:
    """A generated organization, its faults, and (once started) its live state."""

    def __init__(self, spec: OrgSpec | None = None, faults: FaultPlan | None = None,
                 empty_pages: bool = True, account_paths: bool = True,
                 catalog: ServiceCatalog | None = None) -> None:
        self.spec = spec or OrgSpec()
        self.catalog = catalog or load_catalog()
        self.model: OrganizationModel = generate(self.spec, self.catalog)
        self.faults = faults or FaultPlan()
        self.state = SimState(self.model, self.faults, self.catalog, empty_pages=empty_pages,
                              account_paths=account_paths)
        self.credentials: Credentials | None = None
        self.endpoint_url: str | None = None

    # -- lifecycle --------------------------------------------------------------------
    def load(self) -> Credentials:
        """Install the hooks, reset moto and write the organization into it."""
        patches.install()
        reset_backends()
        patches.forget_accounts()
        self.credentials = load_organization(self.model)
        activate(self.state)
        return self.credentials

    def unload(self) -> None:
        """Stop answering as this organization."""
        deactivate(self.state)
        patches.forget_accounts()

    @contextlib.contextmanager
    def in_process(self) -> Iterator[SimulatedOrganization]:
        """Run inside moto's in-process mock (every botocore client of this process)."""
        with mock_aws():
            self.load()
            try:
                yield self
            finally:
                self.unload()

    @contextlib.contextmanager
    def serve(self, port: int = 0, host: str = LOOPBACK) -> Iterator[SimulatedOrganization]:
        """Run as an HTTP endpoint on loopback; ``port=0`` picks a free port."""
        server = LoopbackServer(host, port)
        self.load()
        server.start()
        self.endpoint_url = server.url
        try:
            yield self
        finally:
            server.stop()
            self.endpoint_url = None
            self.unload()

    # -- for clients ------------------------------------------------------------------
    @property
    def management_account_id(self) -> str:
        """The management account's id."""
        return self.model.management_account_id

    @property
    def member_account_ids(self) -> list[str]:
        """Every account but the management account."""
        return [account_id for account_id in self.model.accounts if account_id != self.management_account_id]

    def role_arn(self, account_id: str, name: str | None = None) -> str:
        """The ARN of the crawler's role (or ``name``) in an account."""
        return f"arn:{self.model.partition}:iam::{account_id}:role/{name or self.model.crawler_role_name}"

    def boto3_session(self, region_name: str = REGION) -> boto3.Session:
        """A boto3 session with the operator's credentials (management account)."""
        credentials = self._require_credentials()
        return boto3.Session(aws_access_key_id=credentials.access_key_id,
                             aws_secret_access_key=credentials.secret_access_key, region_name=region_name)

    def client(self, service: str, session: boto3.Session | None = None, **kwargs: Any) -> Any:
        """A client of the simulator (``endpoint_url`` set in server mode)."""
        if self.endpoint_url and "endpoint_url" not in kwargs:
            kwargs["endpoint_url"] = self.endpoint_url
        return (session or self.boto3_session()).client(service, **kwargs)

    def assume(self, account_id: str, session_name: str = "sim-test", duration: int = 3600) -> boto3.Session:
        """A boto3 session in ``account_id`` through the crawler's role."""
        answer = self.client("sts").assume_role(RoleArn=self.role_arn(account_id), RoleSessionName=session_name,
                                                DurationSeconds=duration)
        credentials = answer["Credentials"]
        return boto3.Session(aws_access_key_id=credentials["AccessKeyId"],
                             aws_secret_access_key=credentials["SecretAccessKey"],
                             aws_session_token=credentials["SessionToken"], region_name=REGION)

    def environment(self) -> dict[str, str]:
        """Environment variables that point the AWS SDKs and CLI at this organization."""
        credentials = self._require_credentials()
        env = {"AWS_ACCESS_KEY_ID": credentials.access_key_id,
               "AWS_SECRET_ACCESS_KEY": credentials.secret_access_key, "AWS_DEFAULT_REGION": REGION}
        if self.endpoint_url:
            env["AWS_ENDPOINT_URL"] = self.endpoint_url
        return env

    def write_aws_config(self, directory: str | Path, profile: str = "sim") -> tuple[Path, Path]:
        """Write an AWS config and credentials file with a profile for this organization."""
        credentials = self._require_credentials()
        target = Path(directory)
        target.mkdir(parents=True, exist_ok=True)
        config, shared = target / "config", target / "credentials"
        endpoint = f"endpoint_url = {self.endpoint_url}\n" if self.endpoint_url else ""
        config.write_text(f"[profile {profile}]\nregion = {REGION}\n{endpoint}", encoding="utf-8")
        shared.write_text(f"[{profile}]\naws_access_key_id = {credentials.access_key_id}\n"
                          f"aws_secret_access_key = {credentials.secret_access_key}\n", encoding="utf-8")
        os.chmod(shared, 0o600)
        return config, shared

    # -- while running -----------------------------------------------------------------
    def delete_entity(self, arn: str) -> bool:
        """Delete a user, role, group or policy now, as if someone did it during the crawl."""
        from moto.iam.models import iam_backends

        account_id = arn.split(":")[4]
        with self.state.lock:
            deleted = delete_entity(iam_backends[account_id][self.model.partition], arn)
            if deleted:
                self.state.deleted.add(arn)
        return deleted

    # -- ground truth ------------------------------------------------------------------
    def service_rows(self) -> list[dict[str, Any]]:
        """Service-level ground truth (see :mod:`crawler.sim.truth`)."""
        return truth.service_rows(self.model)

    def action_rows(self) -> list[dict[str, Any]]:
        """Action-level ground truth."""
        return truth.action_rows(self.model)

    def write_ground_truth(self, directory: str | Path) -> dict[str, Path]:
        """Write the ground truth as JSON Lines."""
        return truth.write_ground_truth(self.model, directory)

    def _require_credentials(self) -> Credentials:
        if self.credentials is None:
            raise RuntimeError("start the simulated organization first (in_process() or serve())")
        return self.credentials


class QuietRequestHandler(MotoRequestHandler):
    """moto's request handler without werkzeug's access log (one line per request on stderr),
    speaking HTTP/1.1 so that connections are kept alive between requests, as AWS's are
    (werkzeug's HTTP/1.0 default made every call open and close a TCP connection)."""

    protocol_version = "HTTP/1.1"

    def log_request(self, *args: Any, **kwargs: Any) -> None:
        """Log nothing: a crawl makes thousands of requests."""


class LoopbackServer:
    """moto's WSGI application on a threaded werkzeug server, bound before it is started so
    that a port in use fails at once (moto's ThreadedMotoServer would hang)."""

    def __init__(self, host: str, port: int) -> None:
        _check_free(host, port)
        app = DomainDispatcherApplication(create_backend_app)
        self.server: BaseWSGIServer = make_server(host, port, app, threaded=True, request_handler=QuietRequestHandler)
        self.thread = threading.Thread(target=self.server.serve_forever, name="sim-server", daemon=True)

    @property
    def url(self) -> str:
        """``http://127.0.0.1:<port>``."""
        host, port = self.server.server_address[:2]
        host = host.decode() if isinstance(host, bytes) else host
        return f"http://{host}:{port}"

    def start(self) -> None:
        """Serve in a background thread."""
        self.thread.start()

    def stop(self) -> None:
        """Stop serving and close the socket."""
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=10)


def _check_free(host: str, port: int) -> None:
    """Raise OSError when ``host:port`` cannot be bound (werkzeug would print and exit instead)."""
    if port == 0:
        return
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind((host, port))
