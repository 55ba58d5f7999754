"""A small Redis (RESP2) client over wasi:sockets, with every wait bounded by a deadline.

componentize-py's CPython has no `socket` module, so this talks to the host through
the generated bindings: name lookup, connect, and streams, each wait a wasi:io poll on
the socket's pollable and a monotonic-clock timer. The host decides every connect and
lookup against the step's grants; a refusal comes back as `access-denied`.
"""

import ipaddress

from componentize_py_types import Err
from wit_world.imports import (
    instance_network,
    ip_name_lookup,
    monotonic_clock,
    network,
    poll,
    streams,
    tcp_create_socket,
)


class RedisError(Exception):
    """A failure talking to Redis; the message is what the report shows."""


class ReplyError(RedisError):
    """The server answered with a RESP error (`-ERR ...`)."""


def describe(error: object) -> str:
    """A readable name for a wasi error value (`connection-refused`, `access-denied`)."""
    if isinstance(error, Err):
        error = error.value
    if isinstance(error, network.ErrorCode):
        return error.name.lower().replace("_", "-")
    if isinstance(error, streams.StreamError_Closed):
        return "connection closed by the server"
    if isinstance(error, streams.StreamError_LastOperationFailed):
        return error.value.to_debug_string()
    return str(error)


class Deadline:
    """Monotonic deadline in nanoseconds."""

    def __init__(self, millis: int):
        self.at = monotonic_clock.now() + millis * 1_000_000

    def wait(self, pollable: poll.Pollable, what: str) -> None:
        """Blocks until `pollable` is ready; raises RedisError when the deadline passes first."""
        left = self.at - monotonic_clock.now()
        if left <= 0:
            raise RedisError(f"timed out {what}")
        with monotonic_clock.subscribe_duration(left) as timer:
            ready = poll.poll([pollable, timer])
        if 0 not in ready:
            raise RedisError(f"timed out {what}")


def resolve(net: network.Network, host: str, deadline: Deadline) -> list:
    """The host's IP addresses: an IP literal as is, a name through wasi:sockets lookup."""
    try:
        literal = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        literal = None
    if literal is not None:
        if literal.version == 4:
            return [network.IpAddress_Ipv4(tuple(literal.packed))]
        words = literal.packed
        return [network.IpAddress_Ipv6(tuple(int.from_bytes(words[i : i + 2], "big") for i in range(0, 16, 2)))]
    try:
        lookup = ip_name_lookup.resolve_addresses(net, host)
    except Err as err:
        raise RedisError(f"cannot resolve {host}: {describe(err)}") from None
    addresses = []
    with lookup:
        while True:
            try:
                address = lookup.resolve_next_address()
            except Err as err:
                if err.value == network.ErrorCode.WOULD_BLOCK:
                    with lookup.subscribe() as ready:
                        deadline.wait(ready, f"resolving {host}")
                    continue
                raise RedisError(f"cannot resolve {host}: {describe(err)}") from None
            if address is None:
                break
            addresses.append(address)
    if not addresses:
        raise RedisError(f"cannot resolve {host}: no addresses")
    return addresses


class Connection:
    """One TCP connection speaking RESP2. Use it in a `with` block: it releases its
    streams before the socket, as WASI requires."""

    def __init__(self, host: str, port: int, deadline: Deadline):
        self.deadline = deadline
        self.buffer = b""
        net = instance_network.instance_network()
        failures = []
        self.socket = self.input = self.output = None
        try:
            for address in resolve(net, host, deadline):
                try:
                    self._connect(net, address, port)
                    return
                except RedisError as err:
                    failures.append(str(err))
        finally:
            net.__exit__(None, None, None)
        raise RedisError("; ".join(failures))

    def _connect(self, net: network.Network, address, port: int) -> None:
        if isinstance(address, network.IpAddress_Ipv4):
            family = network.IpAddressFamily.IPV4
            remote = network.IpSocketAddress_Ipv4(network.Ipv4SocketAddress(port, address.value))
        else:
            family = network.IpAddressFamily.IPV6
            remote = network.IpSocketAddress_Ipv6(network.Ipv6SocketAddress(port, 0, address.value, 0))
        socket = tcp_create_socket.create_tcp_socket(family)
        try:
            socket.start_connect(net, remote)
            while True:
                try:
                    self.input, self.output = socket.finish_connect()
                    break
                except Err as err:
                    if err.value != network.ErrorCode.WOULD_BLOCK:
                        raise
                with socket.subscribe() as ready:
                    self.deadline.wait(ready, "connecting")
        except Err as err:
            socket.__exit__(None, None, None)
            raise RedisError(describe(err)) from None
        except RedisError:
            socket.__exit__(None, None, None)
            raise
        self.socket = socket

    def __enter__(self) -> "Connection":
        return self

    def __exit__(self, *exc) -> None:
        for resource in (self.input, self.output, self.socket):
            if resource is not None:
                resource.__exit__(None, None, None)
        self.socket = self.input = self.output = None

    def call(self, *args: str):
        """Sends one command and returns its reply (str, int, None, or list); a RESP
        error raises ReplyError."""
        command = [b"*%d\r\n" % len(args)]
        for arg in args:
            data = arg.encode()
            command.append(b"$%d\r\n%s\r\n" % (len(data), data))
        payload = b"".join(command)
        try:
            while payload:
                chunk, payload = payload[:4096], payload[4096:]
                self.output.blocking_write_and_flush(chunk)
        except Err as err:
            raise RedisError(f"write failed: {describe(err)}") from None
        return self._reply()

    def _fill(self) -> None:
        while True:
            try:
                data = self.input.read(65536)
            except Err as err:
                raise RedisError(describe(err)) from None
            if data:
                self.buffer += data
                return
            with self.input.subscribe() as ready:
                self.deadline.wait(ready, "waiting for the reply")

    def _line(self) -> bytes:
        while b"\r\n" not in self.buffer:
            if len(self.buffer) > 1 << 20:
                raise RedisError("reply line longer than 1 MiB")
            self._fill()
        line, self.buffer = self.buffer.split(b"\r\n", 1)
        return line

    def _reply(self):
        line = self._line()
        kind, rest = line[:1], line[1:].decode(errors="replace")
        if kind == b"+":
            return rest
        if kind == b"-":
            raise ReplyError(rest)
        if kind == b":":
            return int(rest)
        if kind == b"$":
            size = int(rest)
            if size < 0:
                return None
            while len(self.buffer) < size + 2:
                self._fill()
            data, self.buffer = self.buffer[:size], self.buffer[size + 2 :]
            return data.decode(errors="replace")
        if kind == b"*":
            count = int(rest)
            return None if count < 0 else [self._reply() for _ in range(count)]
        raise RedisError(f"not a Redis reply: {line[:40]!r}")
