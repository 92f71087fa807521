"""A local Cloud SQL: the Admin API the connector calls, an OAuth token endpoint, and the
instance's mTLS endpoint on port 3307 (hard-coded in the connector), proxying to the local
PostgreSQL. The real ``cloud-sql-python-connector`` talks to it over the wire.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import re
import socket
import ssl
import threading
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import NameOID

from .support import Recorded, RecordingServer, TLSFiles, make_tls, pipe

SERVER_PORT = 3307
LOGIN_TOKEN = "iam-login-token"


class FakeCloudSQL:
    def __init__(self, directory: Path, postgres_port: int = 5432) -> None:
        self.tls: TLSFiles = make_tls(directory)
        self.postgres_port = postgres_port
        self.ca_cert = x509.load_pem_x509_certificate(self.tls.ca_cert.read_bytes())
        self.ca_key: Any = serialization.load_pem_private_key(self.tls.ca_key.read_bytes(), None)
        self.ephemeral_requests: list[dict[str, Any]] = []
        self.tls_clients: list[str] = []
        self.api = RecordingServer(self._api)
        self._listener = socket.socket()
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", SERVER_PORT))  # OSError if taken: the caller skips
        self._listener.listen(16)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_3
        context.load_cert_chain(self.tls.server_cert, self.tls.server_key)
        context.load_verify_locations(self.tls.ca_cert)
        context.verify_mode = ssl.CERT_REQUIRED  # only clients holding an ephemeral cert we signed
        self._context = context
        threading.Thread(target=self._serve_tls, daemon=True).start()

    # -- Admin API and OAuth --------------------------------------------------------------

    def _api(self, request: Recorded) -> tuple[int, dict[str, str], bytes]:
        headers = {"content-type": "application/json"}
        if request.path == "/token":
            body = {"access_token": LOGIN_TOKEN, "expires_in": 3600, "token_type": "Bearer"}
            return 200, headers, json.dumps(body).encode()
        if re.fullmatch(r"/sql/v1beta4/projects/proj/instances/db/connectSettings", request.path):
            body = {
                "kind": "sql#connectSettings",
                "region": "us-central1",
                "databaseVersion": "POSTGRES_15",
                "backendType": "SECOND_GEN",
                # The public IP goes nowhere here: connecting to it would fail the test.
                "ipAddresses": [
                    {"type": "PRIMARY", "ipAddress": "127.0.0.2"},
                    {"type": "PRIVATE", "ipAddress": "127.0.0.1"},
                ],
                "serverCaCert": {"cert": self.tls.ca_cert.read_text()},
            }
            return 200, headers, json.dumps(body).encode()
        if request.path == "/sql/v1beta4/projects/proj/instances/db:generateEphemeralCert":
            data = json.loads(request.body)
            self.ephemeral_requests.append(data)
            return 200, headers, json.dumps({"ephemeralCert": {"cert": self._sign(data["public_key"])}}).encode()
        return 404, headers, json.dumps({"error": {"code": 404, "message": f"no {request.path}"}}).encode()

    def _sign(self, public_key_pem: str) -> str:
        now = datetime.datetime.now(datetime.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "ephemeral")]))
            .issuer_name(self.ca_cert.subject)
            .public_key(serialization.load_pem_public_key(public_key_pem.encode()))  # type: ignore[arg-type]
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=1))
            .not_valid_after(now + datetime.timedelta(hours=1))
            .sign(self.ca_key, hashes.SHA256())
        )
        return cert.public_bytes(serialization.Encoding.PEM).decode()

    # -- the instance ----------------------------------------------------------------------

    def _serve_tls(self) -> None:
        while True:
            try:
                raw, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._handle, args=(raw,), daemon=True).start()

    def _handle(self, raw: socket.socket) -> None:
        try:
            tls = self._context.wrap_socket(raw, server_side=True)
        except (ssl.SSLError, OSError):
            raw.close()
            return
        peer = tls.getpeercert()
        self.tls_clients.append(str(peer.get("subject")) if peer else "")
        upstream = socket.create_connection(("127.0.0.1", self.postgres_port))
        threading.Thread(target=pipe, args=(upstream, tls), daemon=True).start()
        pipe(tls, upstream)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)
        self._listener.close()
        self.api.close()
