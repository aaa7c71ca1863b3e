"""OPC UA security of the plant server: users and roles, certificates, the client trust list.

- **Users** come from :mod:`twin.users` (users file and ``SXTWIN_USERS``, scrypt hashes): a
  ``UserName`` token is checked with :meth:`twin.users.UserStore.authenticate` and the session
  carries the user's :class:`twin.security.Role` (:class:`SessionUser`). An anonymous session
  (only when ``allow_anonymous``, a development switch) is a viewer. asyncua's own roles only
  keep its generic paths open; every decision of ours is :func:`twin.security.check`.
- **Certificates**: :func:`ensure_certificate` creates a self-signed application instance
  certificate (RSA 2048, SHA-256, the application URI and host names in subjectAltName) and its
  key (mode 0600) on first start in ``<pki>/own/``, and reuses them later (renewed when expired
  or issued for another URI).
- **Trust list**: :class:`TrustList` accepts a client certificate only when it is in
  ``<pki>/trusted/`` (DER or PEM; or issued by a CA there), within its validity; an unknown one
  is refused with ``BadCertificateUntrusted`` and copied to ``<pki>/rejected/`` so an
  administrator can move it to ``trusted/``. The directory is re-read when it changes, so no
  restart is needed.

scrypt takes about 0.3 s per verification and asyncua activates sessions synchronously on the
event loop; successful verifications are therefore memoised in memory (an HMAC of the password
under a random per-process key), so a reconnecting client does not stall the plant clock.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import logging
import os
import secrets
import socket
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

from asyncua import ua
from asyncua.crypto import cert_gen, uacrypto
from asyncua.crypto.permission_rules import ADMIN_TYPES, USER_TYPES, PermissionRuleset, User, UserRole
from asyncua.crypto.truststore import TrustStore
from asyncua.server.user_managers import UserManager
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import ExtendedKeyUsageOID

from models.errors import AuthorisationError
from opcua import _ua
from twin.security import Role
from twin.users import UserStore

__all__ = [
    "SERVER_APPLICATION_URI",
    "PlantPermissionRuleset",
    "PlantUserManager",
    "SessionUser",
    "TrustList",
    "ensure_certificate",
    "pki_layout",
]

log = logging.getLogger(__name__)

SERVER_APPLICATION_URI: Final = "urn:sxtwin:plant:server"
"""Application URI of the simulated-plant server (in its certificate's subjectAltName)."""


@dataclass
class SessionUser(User):
    """An asyncua session user that also carries sxtwin's role (``None``: not authenticated)."""

    sx_role: Role | None = None


class PlantPermissionRuleset(PermissionRuleset):  # type: ignore[misc]
    """Every session may use the ordinary services (read, write, browse, subscribe, call);
    nobody may change the address space remotely. What a role may do is checked by the plant
    session (:mod:`opcua.server`) with :func:`twin.security.check`."""

    def __init__(self) -> None:
        self._allowed = {_ua.node_id(t) for t in USER_TYPES}
        self._denied = {_ua.node_id(t) for t in ADMIN_TYPES}

    def check_validity(self, user: Any, action_type_id: ua.NodeId, body: Any) -> bool:
        return action_type_id in self._allowed and action_type_id not in self._denied


class PlantUserManager(UserManager):  # type: ignore[misc]
    """Maps OPC UA identity tokens to sxtwin users and roles.

    Parameters
    ----------
    store
        The users (:func:`twin.users.load_user_store`).
    allow_anonymous
        Accept anonymous sessions as viewers (development only).
    """

    def __init__(self, store: UserStore, *, allow_anonymous: bool = False) -> None:
        self.store = store
        self.allow_anonymous = allow_anonymous
        self._key = secrets.token_bytes(32)
        self._verified: dict[str, bytes] = {}

    def _digest(self, name: str, password: str) -> bytes:
        return hmac.new(self._key, f"{name}\x00{password}".encode(), hashlib.sha256).digest()

    def authenticate(self, name: str, password: str) -> SessionUser:
        """The session user for a name and password (raises :class:`AuthorisationError`)."""
        digest = self._digest(name, password)
        known = self._verified.get(name)
        if known is not None and hmac.compare_digest(known, digest) and name in self.store:
            user = self.store.get(name)
        else:
            user = self.store.authenticate(name, password)
            self._verified[name] = digest
        return SessionUser(role=UserRole.User, name=user.name, sx_role=user.role)

    def get_user(
        self,
        iserver: Any,
        username: str | None = None,
        password: str | None = None,
        certificate: Any = None,
    ) -> SessionUser | None:
        """asyncua's hook (called on ActivateSession); ``None`` refuses the session."""
        if username is not None:
            try:
                user = self.authenticate(username, password or "")
            except AuthorisationError:
                log.info("OPC UA session refused for user %r: authentication failed", username)
                return None
            log.info("OPC UA session for user %r (%s)", user.name, user.sx_role)
            return user
        # X509 identity tokens are not offered: without a user name this is an anonymous token
        if self.allow_anonymous:
            return SessionUser(role=UserRole.User, name="anonymous", sx_role=Role.VIEWER)
        log.info("OPC UA session refused: anonymous access is switched off")
        return None


def pki_layout(pki_dir: Path) -> dict[str, Path]:
    """The PKI directories (created, mode 0700): ``own``, ``trusted``, ``rejected``."""
    out = {name: pki_dir / name for name in ("own", "trusted", "rejected")}
    for path in out.values():
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
    return out


def _host_names() -> list[str]:
    names = ["localhost"]
    host = socket.gethostname()
    if host and host not in names:
        names.append(host)
    return names


def ensure_certificate(
    own_dir: Path,
    application_uri: str = SERVER_APPLICATION_URI,
    *,
    common_name: str = "sxtwin simulated plant",
    client: bool = False,
    days: int = 730,
) -> tuple[Path, Path]:
    """Create (first start) or reuse a self-signed application certificate and key.

    Returns ``(cert.der, key.pem)`` in ``own_dir``. A certificate that is expired, expires within
    a day, or names another application URI is replaced (with a new key).
    """
    own_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    cert_path, key_path = own_dir / "cert.der", own_dir / "key.pem"
    if cert_path.exists() and key_path.exists():
        try:
            cert = x509.load_der_x509_certificate(cert_path.read_bytes())
            san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
            uris = san.get_values_for_type(x509.UniformResourceIdentifier)
            fresh = (cert.not_valid_after_utc - datetime.now(UTC)).total_seconds() > 86400
            if application_uri in uris and fresh:
                return cert_path, key_path
        except (ValueError, x509.ExtensionNotFound):
            pass
        log.warning("replacing the certificate in %s (expired, unreadable or for another URI)", own_dir)
    key = cert_gen.generate_private_key()
    alt: list[x509.GeneralName] = [x509.UniformResourceIdentifier(application_uri)]
    alt += [x509.DNSName(n) for n in _host_names()]
    alt.append(x509.IPAddress(ipaddress.ip_address("127.0.0.1")))
    usage = (
        [ExtendedKeyUsageOID.CLIENT_AUTH]
        if client
        else [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
    )
    cert = cert_gen.generate_self_signed_app_certificate(
        key, common_name, {"organizationName": "sxtwin"}, alt, usage, days=days
    )
    tmp_key = key_path.with_suffix(".tmp")
    fd = os.open(tmp_key, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(cert_gen.dump_private_key_as_pem(key))
    tmp_key.replace(key_path)
    tmp_cert = cert_path.with_suffix(".tmp")
    tmp_cert.write_bytes(cert.public_bytes(Encoding.DER))
    tmp_cert.replace(cert_path)
    log.info("created a self-signed certificate for %s in %s", application_uri, own_dir)
    return cert_path, key_path


def _fingerprint(cert: x509.Certificate) -> str:
    return cert.fingerprint(hashes.SHA256()).hex()


class TrustList:
    """Client-certificate validation against ``<pki>/trusted`` (an asyncua certificate validator).

    A certificate is trusted when it is byte-identical to one in ``trusted/`` or verifies
    against a CA certificate there (asyncua's :class:`~asyncua.crypto.truststore.TrustStore`),
    and the current time lies in its validity. An untrusted one is copied to ``rejected/``.
    """

    def __init__(self, trusted_dir: Path, rejected_dir: Path) -> None:
        self.trusted_dir = trusted_dir
        self.rejected_dir = rejected_dir
        self._stamp: tuple[tuple[str, float], ...] | None = None
        self._fingerprints: set[str] = set()
        self._store = TrustStore([trusted_dir], [])

    async def _reload(self) -> None:
        files = tuple(
            sorted(
                (p.name, p.stat().st_mtime) for p in self.trusted_dir.iterdir() if p.suffix.lower() in (".der", ".pem")
            )
        )
        if files == self._stamp:
            return
        fingerprints = set()
        for name, _ in files:
            try:
                cert = await uacrypto.load_certificate(self.trusted_dir / name)
            except Exception:
                log.warning("ignoring unreadable certificate %s", self.trusted_dir / name)
                continue
            fingerprints.add(_fingerprint(cert))
        self._fingerprints = fingerprints
        await self._store.load()
        self._stamp = files

    async def __call__(self, cert: x509.Certificate, app_description: ua.ApplicationDescription) -> None:
        """Raise ``ServiceError(BadCertificate...)`` unless the certificate is trusted."""
        from asyncua.common.utils import ServiceError

        await self._reload()
        now = datetime.now(UTC)
        if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
            raise ServiceError(ua.StatusCodes.BadCertificateTimeInvalid)
        fp = _fingerprint(cert)
        if fp in self._fingerprints or self._chains(cert):
            return
        target = self.rejected_dir / f"{_safe(app_description.ApplicationUri)}-{fp[:16]}.der"
        try:
            target.write_bytes(cert.public_bytes(Encoding.DER))
        except OSError:
            log.warning("could not copy a rejected certificate to %s", target)
        log.warning(
            "refused an untrusted client certificate (application %s); copied to %s - move it to %s to trust it",
            app_description.ApplicationUri,
            target,
            self.trusted_dir,
        )
        raise ServiceError(ua.StatusCodes.BadCertificateUntrusted)

    def _chains(self, cert: x509.Certificate) -> bool:
        if not self._fingerprints:
            return False
        logger = logging.getLogger("asyncuagds.validate")
        level = logger.level
        logger.setLevel(logging.CRITICAL)  # TrustStore logs a traceback for every unknown certificate
        try:
            return bool(self._store.is_trusted(cert))
        finally:
            logger.setLevel(level)


def _safe(text: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in (text or "unknown"))[:80]
