"""Where a webhook may point: https to public addresses only, checked when it is registered and again,
against fresh DNS, before every delivery (a name that resolved to a public address yesterday may
resolve to 169.254.169.254 today).

- ``check_url`` refuses a URL by its form: another scheme, credentials in it, no host, a host that is
  an address outside the public internet (loopback, private, link-local, metadata, CGNAT, multicast,
  reserved, and IPv6 forms that carry one of those: IPv4-mapped, 6to4, Teredo, NAT64).
- ``public_addresses`` resolves the host and refuses it unless every address is public: a name with
  one private address among public ones is refused, since the connection could land on either.
- The delivery then connects to the address it checked (``pinned``), naming the host in the
  ``Host`` header and TLS's SNI, so a second lookup cannot swap the address after the check.

``UrlPolicy.allow_loopback_http`` (the template's ``WebhookAllowLoopback``, set by the local cloud)
allows ``http`` and ``https`` to loopback addresses, and nothing else: private, link-local and metadata
addresses stay refused.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from billhub.errors import ServiceError

MAX_URL_CHARS = 2048
# Names that always mean this machine, whatever DNS says.
LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain"})
# 64:ff9b::/96 carries an IPv4 address for NAT64; so does 64:ff9b:1::/48 (RFC 8215).
_NAT64 = (ipaddress.ip_network("64:ff9b::/96"), ipaddress.ip_network("64:ff9b:1::/48"))

type Address = ipaddress.IPv4Address | ipaddress.IPv6Address
type Resolver = Callable[[str, int], list[str]]


class RefusedUrl(ServiceError):
    status = 422
    code = "webhook_url_refused"

    def __init__(self, reason: str) -> None:
        super().__init__(f"This URL cannot receive webhooks: {reason}.", details={"reason": reason})


@dataclass(frozen=True)
class UrlPolicy:
    allow_loopback_http: bool = False


@dataclass(frozen=True)
class WebhookUrl:
    """A URL that passed ``check_url``: its parts, as a delivery needs them."""

    url: str
    scheme: str
    host: str  # lower case, IPv6 without brackets
    port: int
    target: str  # path and query, at least "/"


def check_url(url: str, policy: UrlPolicy) -> WebhookUrl:
    """``url`` if its form may receive webhooks under ``policy``; ``RefusedUrl`` saying why not."""
    if len(url) > MAX_URL_CHARS:
        raise RefusedUrl(f"longer than {MAX_URL_CHARS} characters")
    if any(char <= " " or char == "\x7f" for char in url):
        raise RefusedUrl("it holds spaces or control characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as error:
        raise RefusedUrl("not a valid URL") from error
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").lower()
    if scheme not in ("https", "http"):
        raise RefusedUrl("only https URLs are accepted")
    if not host:
        raise RefusedUrl("it names no host")
    if parts.username is not None or parts.password is not None:
        raise RefusedUrl("credentials in the URL are not accepted")
    if not host.isascii():
        raise RefusedUrl("the host must be written in ASCII (punycode)")
    literal = _address(host)
    loopback = host in LOOPBACK_NAMES or (literal is not None and _unwrapped(literal).is_loopback)
    if scheme == "http" and not (policy.allow_loopback_http and loopback):
        raise RefusedUrl("only https URLs are accepted")
    if loopback and not policy.allow_loopback_http:
        raise RefusedUrl("it points at this machine (loopback)")
    if literal is not None:
        refusal = address_refusal(literal, policy)
        if refusal:
            raise RefusedUrl(refusal)
    target = parts.path or "/"
    if parts.query:
        target += f"?{parts.query}"
    default_port = 443 if scheme == "https" else 80
    return WebhookUrl(url=url, scheme=scheme, host=host, port=port or default_port, target=target)


def address_refusal(address: Address, policy: UrlPolicy) -> str | None:
    """Why a delivery must not connect to ``address`` (None: it may)."""
    inner = _unwrapped(address)
    if inner.is_loopback:
        return None if policy.allow_loopback_http else "it points at this machine (loopback)"
    if inner.is_link_local:
        return "it points at a link-local address (such as the cloud's metadata service)"
    if inner.is_private or (inner.version == 6 and inner in ipaddress.ip_network("fc00::/7")):
        return "it points at a private network address"
    if inner.is_multicast or inner.is_unspecified or inner.is_reserved or not inner.is_global:
        return "it points at an address that is not on the public internet"
    return None


def public_addresses(url: WebhookUrl, policy: UrlPolicy, resolve: Resolver | None = None) -> list[Address]:
    """The addresses ``url``'s host resolves to now, every one allowed; ``RefusedUrl`` if it does not
    resolve, or if any address is refused."""
    literal = _address(url.host)
    if literal is not None:
        names = [str(literal)]
    else:
        try:
            names = (resolve or system_resolver)(url.host, url.port)
        except OSError as error:
            raise RefusedUrl("its host does not resolve") from error
    addresses = [ipaddress.ip_address(name.split("%", 1)[0]) for name in dict.fromkeys(names)]
    if not addresses:
        raise RefusedUrl("its host does not resolve")
    if url.host in LOOPBACK_NAMES:
        addresses = [address for address in addresses if _unwrapped(address).is_loopback] or addresses
    for address in addresses:
        refusal = address_refusal(address, policy)
        if refusal:
            raise RefusedUrl(refusal)
    return addresses


def system_resolver(host: str, port: int) -> list[str]:
    """Every address the system's resolver gives ``host`` (IPv4 and IPv6)."""
    found = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in found]


def pinned(url: WebhookUrl, address: Address) -> tuple[str, dict[str, str], dict[str, Any]]:
    """The request to ``address`` that reaches ``url``'s host: the URL with the address in place of the
    host, the ``Host`` header, and httpx's ``sni_hostname`` extension (TLS checks the certificate
    against the host, not the address)."""
    netloc = f"[{address}]" if address.version == 6 else str(address)
    default_port = 443 if url.scheme == "https" else 80
    host_header = url.host if url.port == default_port else f"{url.host}:{url.port}"
    if ":" in url.host and url.port == default_port:
        host_header = f"[{url.host}]"
    elif ":" in url.host:
        host_header = f"[{url.host}]:{url.port}"
    extensions: dict[str, Any] = {"sni_hostname": url.host} if url.scheme == "https" else {}
    return f"{url.scheme}://{netloc}:{url.port}{url.target}", {"Host": host_header}, extensions


def _address(host: str) -> Address | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


def _unwrapped(address: Address) -> Address:
    """The IPv4 address an IPv6 one carries (IPv4-mapped, 6to4, Teredo's client, NAT64), else itself."""
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return address.ipv4_mapped
        if address.sixtofour is not None:
            return address.sixtofour
        if address.teredo is not None:
            return address.teredo[1]
        if any(address in network for network in _NAT64):
            return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return address
