"""Outbound-request guard (SSRF): only public ``http(s)`` addresses unless an operator allows more.

Apps that call URLs users can configure (webhooks, feeds) use this module so that a URL typed in a
dashboard cannot reach loopback, private networks, link-local / cloud-metadata addresses
(``169.254.169.254``, ``metadata.google.internal``) or numeric host spellings of them
(``http://2130706433/``, ``http://0x7f000001/``).

* :func:`check_public_url` parses a URL, resolves its host and refuses it (:class:`DataError`, one
  line) unless *every* resolved address is public or permitted by the allow-list.
* :func:`guarded_request` sends one request **to the address that was checked** (no second DNS
  lookup, so DNS rebinding cannot swap it), under one overall wall-clock deadline (a receiver that
  trickles a byte per second is cut at the deadline), following redirects by hand with each hop
  re-checked.
* The allow-list is an operator setting kept *outside* dashboard-editable config: the environment
  variable ``VERTICORE_WEBHOOK_ALLOW`` (comma-separated hosts, IPs or CIDRs, e.g.
  ``127.0.0.1,::1,10.0.0.0/8,hooks.internal``), plus whatever a CLI flag passes in code.
"""
from __future__ import annotations

import ipaddress
import re
import socket
import ssl
import time
from dataclasses import dataclass, field
from typing import Callable, Iterable, Iterator, Sequence
from urllib.parse import urljoin, urlsplit

from .errors import DataError

ENV_ALLOW = "VERTICORE_WEBHOOK_ALLOW"
MAX_REDIRECTS = 5
_SCHEME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*:")
# names that reach a cloud provider's instance metadata service (credentials) on most clouds
METADATA_HOSTS = frozenset({"metadata", "metadata.google.internal", "metadata.goog", "instance-data",
                            "instance-data.ec2.internal", "metadata.azure.com", "metadata.packet.net"})
_NAT64 = ipaddress.ip_network("64:ff9b::/96")

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[[str, int], list[str]]


class NetError(DataError):
    """A transient network failure (DNS, connect, reset, deadline): worth retrying, unlike a policy refusal."""

    def __init__(self, message: str, *, timeout: bool = False) -> None:
        super().__init__(message)
        self.timeout = timeout


@dataclass(frozen=True)
class AllowList:
    """Hosts (exact, or ``.suffix`` for subdomains) and networks permitted although not public."""

    hosts: frozenset[str] = frozenset()
    networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()

    def permits_host(self, host: str) -> bool:
        h = host.lower().rstrip(".")
        return h in self.hosts or any(a.startswith(".") and h.endswith(a) for a in self.hosts)

    def permits_ip(self, ip: IPAddress) -> bool:
        return any(ip.version == n.version and ip in n for n in self.networks)

    def __or__(self, other: "AllowList") -> "AllowList":
        return AllowList(self.hosts | other.hosts, tuple(dict.fromkeys(self.networks + other.networks)))

    def __bool__(self) -> bool:
        return bool(self.hosts or self.networks)


def parse_allow_list(spec: str | Iterable[str] | AllowList | None) -> AllowList:
    """``"127.0.0.1,::1,10.0.0.0/8,hooks.internal"`` (or a list of such entries) -> :class:`AllowList`."""
    if spec is None:
        return AllowList()
    if isinstance(spec, AllowList):
        return spec
    items = spec.split(",") if isinstance(spec, str) else [p for s in spec for p in str(s).split(",")]
    hosts: set[str] = set()
    nets: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
    for raw in items:
        entry = raw.strip().strip("[]").lower()
        if not entry:
            continue
        try:
            nets.append(ipaddress.ip_network(entry, strict=False))
            continue
        except ValueError:
            pass
        if not re.fullmatch(r"\.?[a-z0-9_]([a-z0-9_\-.]*[a-z0-9_])?", entry):
            raise DataError(f"allow-list entry {raw.strip()!r} is not a host name, IP address or CIDR")
        hosts.add(entry.rstrip("."))
    return AllowList(frozenset(hosts), tuple(nets))


def allow_from_env(extra: str | Iterable[str] | AllowList | None = None) -> AllowList:
    """The operator allow-list from ``$VERTICORE_WEBHOOK_ALLOW``, merged with ``extra`` (e.g. a CLI flag)."""
    from .settings import get_settings

    env = get_settings().webhook_allow
    try:
        base = parse_allow_list(env)
    except DataError as exc:
        raise DataError(f"${ENV_ALLOW}: {exc}") from None
    return base | parse_allow_list(extra)


def is_public_ip(ip: IPAddress) -> bool:
    """Globally routable unicast (IPv4-mapped / NAT64 IPv6 addresses are judged by their IPv4 part)."""
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return is_public_ip(ip.ipv4_mapped)
        if ip in _NAT64:
            return is_public_ip(ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF))
        if ip.sixtofour is not None and not is_public_ip(ip.sixtofour):
            return False
    return bool(ip.is_global and not ip.is_multicast and not ip.is_reserved and not ip.is_unspecified
                and not ip.is_loopback and not ip.is_link_local and not ip.is_private)


def literal_ip(host: str) -> IPAddress | None:
    """The address a numeric host denotes, including legacy IPv4 spellings (``2130706433``,
    ``0x7f000001``, ``0177.0.0.1``, ``127.1``) that resolvers and browsers accept."""
    h = host.strip("[]")
    try:
        return ipaddress.ip_address(h.split("%", 1)[0])
    except ValueError:
        pass
    if re.fullmatch(r"[0-9a-fA-FxX.]+", h) and re.match(r"^(0[xX][0-9a-fA-F]*|[0-9]+)(\.|$)", h):
        try:
            return ipaddress.IPv4Address(socket.inet_aton(h))
        except OSError:
            return None
    return None


def system_resolver(host: str, port: int) -> list[str]:
    """All addresses ``getaddrinfo`` gives for ``host`` (raises :class:`NetError` when it does not resolve)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise NetError(f"host {host!r} does not resolve ({exc.args[-1] if exc.args else exc})") from None
    return list(dict.fromkeys(info[4][0] for info in infos))


@dataclass(frozen=True)
class ParsedTarget:
    """A checked URL: where to send (``addresses``, all checked; the first is used) and what to call it."""

    url: str
    scheme: str
    host: str
    port: int
    addresses: tuple[str, ...] = field(default=())


def split_http_url(url: str, what: str = "URL") -> tuple[str, str, int]:
    """``(scheme, host, port)`` of an ``http``/``https`` URL (any case); anything else is a :class:`DataError`."""
    if not isinstance(url, str) or not url.strip():
        raise DataError(f"{what} is empty")
    if url != url.strip() or any(ord(c) < 33 for c in url):
        raise DataError(f"{what} {url[:100]!r} contains spaces or control characters")
    if not _SCHEME_RE.match(url):
        raise DataError(f"{what} {url[:100]!r} must use http or https (got no scheme)")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise DataError(f"{what} {url[:100]!r} is malformed: {exc}") from None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise DataError(f"{what} {url[:100]!r} must use http or https (got scheme {scheme!r})")
    host = (parts.hostname or "").lower().rstrip(".")
    if not host:
        raise DataError(f"{what} {url[:100]!r} has no host")
    if parts.username is not None or parts.password is not None:
        raise DataError(f"{what} {url[:100]!r} must not embed credentials")
    return scheme, host, port or (443 if scheme == "https" else 80)


def _refusal(what: str, host: str, detail: str) -> DataError:
    return DataError(f"{what} host {host} {detail}; only public addresses are allowed "
                     f"(an operator can permit it with ${ENV_ALLOW})")


def check_public_url(url: str, allow: str | Iterable[str] | AllowList | None = None, *, resolve: bool = True,
                     resolver: Resolver | None = None, what: str = "URL") -> ParsedTarget:
    """Parse ``url`` and refuse it unless every address of its host is public or allowed.

    ``allow`` is merged with ``$VERTICORE_WEBHOOK_ALLOW``. ``resolve=False`` checks only what can be
    checked without DNS (scheme, literal IPs in any spelling, ``localhost``, metadata names): for
    validating configuration offline; the send-time check must resolve.
    """
    scheme, host, port = split_http_url(url, what)
    allowed = allow_from_env(allow)
    by_name = allowed.permits_host(host)
    ip = literal_ip(host)
    if ip is not None:
        addresses = [str(ip)]
    elif host in METADATA_HOSTS and not by_name:
        raise _refusal(what, host, "is a cloud metadata service")
    elif (host == "localhost" or host.endswith(".localhost")) and not by_name:
        raise _refusal(what, host, "is loopback")
    elif not resolve:
        return ParsedTarget(url, scheme, host, port, ())
    else:
        addresses = (resolver or system_resolver)(host, port)
        if not addresses:
            raise NetError(f"host {host!r} does not resolve")
    for a in addresses:
        addr = ipaddress.ip_address(a.split("%", 1)[0])
        if not (is_public_ip(addr) or by_name or allowed.permits_ip(addr)):
            shown = host if str(addr) == host else f"{host} ({addr})"
            raise _refusal(what, shown, "is not a public address")
    return ParsedTarget(url, scheme, host, port, tuple(addresses))


# -- sending ----------------------------------------------------------------------------------
@dataclass
class GuardedResponse:
    """Status, headers (lower-case names), the body read (up to the cap) and the final URL."""

    status: int
    headers: dict[str, str]
    body: bytes
    url: str


class _Deadline:
    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.end = time.monotonic() + seconds

    def left(self, op_timeout: float | None = None) -> float:
        rest = self.end - time.monotonic()
        if rest <= 0:
            raise socket.timeout(f"deadline of {self.seconds:g}s passed")
        return rest if op_timeout is None else min(rest, op_timeout)


def _pinned_backend(address: str, deadline: _Deadline):
    """An httpcore network backend that connects to ``address`` (the checked one) whatever the URL
    host says, and caps every socket operation by the remaining overall deadline."""
    import httpcore

    class Stream(httpcore.NetworkStream):
        def __init__(self, inner: httpcore.NetworkStream) -> None:
            self.inner = inner

        def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
            try:
                t = deadline.left(timeout)
            except socket.timeout:
                raise httpcore.ReadTimeout("overall deadline passed") from None
            return self.inner.read(max_bytes, t)

        def write(self, buffer: bytes, timeout: float | None = None) -> None:
            try:
                t = deadline.left(timeout)
            except socket.timeout:
                raise httpcore.WriteTimeout("overall deadline passed") from None
            self.inner.write(buffer, t)

        def close(self) -> None:
            self.inner.close()

        def start_tls(self, ssl_context: ssl.SSLContext, server_hostname: str | None = None,
                      timeout: float | None = None) -> httpcore.NetworkStream:
            try:
                t = deadline.left(timeout)
            except socket.timeout:
                raise httpcore.ConnectTimeout("overall deadline passed") from None
            return Stream(self.inner.start_tls(ssl_context, server_hostname, t))

        def get_extra_info(self, info: str):
            return self.inner.get_extra_info(info)

    class Backend(httpcore.NetworkBackend):
        def __init__(self) -> None:
            self.inner = httpcore.SyncBackend()

        def connect_tcp(self, host: str, port: int, timeout: float | None = None, local_address: str | None = None,
                        socket_options=None) -> httpcore.NetworkStream:
            try:
                t = deadline.left(timeout)
            except socket.timeout:
                raise httpcore.ConnectTimeout("overall deadline passed") from None
            # the checked address, not a fresh lookup of ``host`` (DNS rebinding)
            return Stream(self.inner.connect_tcp(address, port, t, local_address, socket_options))

        def connect_unix_socket(self, *a, **k):  # never used: only TCP targets are checked
            raise httpcore.ConnectError("unix sockets are not allowed")

        def sleep(self, seconds: float) -> None:
            time.sleep(seconds)

    return Backend()


def _one_request(target: ParsedTarget, method: str, headers: Sequence[tuple[str, str]], body: bytes,
                 deadline: _Deadline, max_bytes: int) -> GuardedResponse:
    import httpcore

    pool = httpcore.ConnectionPool(network_backend=_pinned_backend(target.addresses[0], deadline), retries=0)
    t = deadline.seconds
    try:
        with pool.stream(method, target.url, headers=list(headers), content=body,
                         extensions={"timeout": {"connect": t, "read": t, "write": t, "pool": t}}) as resp:
            hdrs = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in resp.headers}
            buf = bytearray()
            if max_bytes > 0:
                for chunk in resp.iter_stream():
                    buf += chunk
                    if len(buf) > max_bytes:
                        raise DataError(f"response from {target.host!r} is larger than {max_bytes} bytes")
                    deadline.left()  # a steady trickle of small chunks ends here too
            return GuardedResponse(resp.status, hdrs, bytes(buf), target.url)
    except socket.timeout:
        raise NetError(f"no complete answer within {deadline.seconds:g}s", timeout=True) from None
    except httpcore.TimeoutException:
        raise NetError(f"no complete answer within {deadline.seconds:g}s", timeout=True) from None
    except (httpcore.NetworkError, httpcore.ProtocolError, OSError) as exc:
        raise NetError(f"connection to {target.host!r} failed ({type(exc).__name__})") from None
    except httpcore.UnsupportedProtocol as exc:
        raise DataError(f"unsupported URL {target.url[:100]!r}: {exc}") from None
    finally:
        pool.close()


def guarded_request(method: str, url: str, *, allow: str | Iterable[str] | AllowList | None = None,
                    deadline_s: float, headers: Sequence[tuple[str, str]] | dict[str, str] = (), body: bytes = b"",
                    max_bytes: int = 0, max_redirects: int = 0, resolver: Resolver | None = None,
                    what: str = "URL") -> GuardedResponse:
    """Send one request under an overall deadline to a checked public address.

    Redirects (``max_redirects`` > 0, GET only) are followed by hand, every hop re-checked.
    ``max_bytes`` caps the body read (0: the body is not read). Raises :class:`DataError` for a
    refused URL or oversized body and :class:`NetError` (a ``DataError``) for timeouts and
    connection failures.
    """
    if deadline_s <= 0:
        raise DataError("deadline_s must be > 0")
    deadline = _Deadline(deadline_s)
    hdrs = list(headers.items()) if isinstance(headers, dict) else list(headers)
    allowed = allow_from_env(allow)
    current = url
    for hop in range(max_redirects + 1):
        target = check_public_url(current, allowed, resolver=resolver, what=what if hop == 0 else "redirect target")
        resp = _one_request(target, method, hdrs, body, deadline, max_bytes)
        location = resp.headers.get("location")
        if resp.status in (301, 302, 303, 307, 308) and location and max_redirects:
            if hop == max_redirects:
                raise DataError(f"{what} {url[:100]!r} redirected more than {max_redirects} times")
            current = urljoin(current, location)
            continue
        return resp
    raise AssertionError("unreachable")


def iter_allow_entries(allow: AllowList) -> Iterator[str]:
    """The allow-list as text entries (for logs and error messages)."""
    yield from sorted(allow.hosts)
    yield from (str(n) for n in allow.networks)
