"""Hostile requests, as hypothesis generates them (tests/integration/test_hostile_input.py under
uWSGI; tests/integration/test_asgi_servers.py under the ASGI servers): request lines, headers and
bodies sent byte for byte over raw sockets, and the checks every server must pass."""

from __future__ import annotations

import collections
import json
import socket
import urllib.parse
from dataclasses import dataclass, field
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from uwsgi_es.testing import UwsgiServer

from .checks import all_events

CONTENT_TYPES = [
    *["application/json"] * 8,  # mostly well-labelled, so most bodies reach the JSON parser
    "application/json; charset=utf-8",
    "APPLICATION/JSON",
    "application/json; charset=latin-1",
    "text/plain",
    "application/x-www-form-urlencoded",
    "multipart/form-data; boundary=xyz",
    "application/xml",
    "",
    "json",
    "application/json\x7f",
]


def json_values() -> st.SearchStrategy[Any]:
    scalars = st.one_of(
        st.none(),
        st.booleans(),
        st.integers(min_value=-(10**40), max_value=10**40),
        st.floats(allow_nan=False, allow_infinity=False),
        st.text(max_size=30),
    )
    return st.recursive(
        scalars,
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
        max_leaves=12,
    )


def bodies() -> st.SearchStrategy[bytes]:
    field_values = st.one_of(
        json_values(), st.sampled_from([1, 50, 10**11, 10**11 + 1, 2**63, -(2**63), 0, -1])
    )
    objects = st.fixed_dictionaries(
        {}, optional={"amount": field_values, "owner": field_values, "x": field_values}
    )
    raw_specials = st.sampled_from(
        [
            b'{"amount": NaN}',
            b'{"amount": Infinity}',
            b'{"amount": -Infinity}',
            b'{"amount": 1e999}',
            b'{"amount": 1, "amount": 2}',
            b'{"owner": "a", "owner": "b"}',
            b'{"owner": "\xff\xfe"}',
            b'{"owner": "\\ud800"}',
            b'{"owner": "\\u0000"}',
            b'{"amount": ' + b"9" * 5000 + b"}",
            b"\xef\xbb\xbf{}",
            b"",
            b"null",
            b'"just a string"',
        ]
    )
    nesting = st.integers(min_value=1, max_value=40_000).map(lambda n: b"[" * n + b"]" * n)
    nested_objects = st.integers(min_value=1, max_value=3_000).map(lambda n: b'{"a":' * n + b"1" + b"}" * n)
    return st.one_of(
        objects.map(lambda o: json.dumps(o).encode()),
        json_values().map(lambda v: json.dumps(v).encode()),
        raw_specials,
        nesting,
        nested_objects,
        st.binary(max_size=300),
    )


def paths(account: str) -> st.SearchStrategy[str]:
    ids = st.one_of(
        st.just(account),
        st.uuids().map(str),
        st.text(max_size=60),
        st.sampled_from(["%00", "..", "../../etc/passwd", "%2e%2e%2f", "null", "-1", "0" * 32, "\x00"]),
    )
    templated = st.tuples(
        st.sampled_from(
            ["/accounts/{}", "/accounts/{}/deposits", "/accounts/{}/withdrawals", "/accounts/{}/events"]
        ),
        ids,
    ).map(lambda t: t[0].format(t[1]))
    fixed = st.sampled_from(
        ["/accounts", "/health", "/ready", "/worker", "/events", "/", "//accounts", "/accounts/"]
    )
    queries = st.sampled_from(
        [
            "",
            "?after=-1",
            "?limit=0",
            "?limit=99999999999999999999",
            "?after=abc&limit=%00",
            "?a=" + "b" * 2000,
        ]
    )
    long = st.integers(min_value=100, max_value=8000).map(lambda n: "/" + "a" * n)
    traversal = st.integers(min_value=1, max_value=30).map(lambda n: "/.." * n + "/etc/passwd")
    text = st.text(max_size=200).map(lambda t: "/" + t)
    return st.tuples(st.one_of(templated, fixed, long, traversal, text), queries).map(lambda t: t[0] + t[1])


def send(
    server: UwsgiServer, method: str, path: str, headers: dict[str, str], body: bytes
) -> tuple[int, bytes]:
    """Send one request as raw bytes; the status code (0 when no answer came) and the body."""
    target = urllib.parse.quote(path, safe="/?=&%")
    head = [f"{method} {target} HTTP/1.1", "Host: hostile", "Connection: close"]
    head += [f"{name}: {value}" for name, value in headers.items()]
    data = ("\r\n".join(head) + "\r\n\r\n").encode("latin-1", "replace") + body
    answer = b""
    with socket.create_connection(("127.0.0.1", server.port), timeout=15) as sock:
        try:
            sock.sendall(data)
            while chunk := sock.recv(65536):
                answer += chunk
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server answered (or gave up) before reading everything: keep what came
    if not answer.startswith(b"HTTP/"):
        return 0, b""
    return int(answer.split(b" ", 2)[1]), answer.partition(b"\r\n\r\n")[2]


def events_of(server: UwsgiServer, account: str) -> int:
    return len(all_events(server, account))


def feed_length(server: UwsgiServer) -> int | None:
    """Events in the global feed; None where the store keeps none (Cassandra)."""
    if server.get("/events?limit=1").status == 404:
        return None
    count, after = 0, 0
    while events := server.get(f"/events?after={after}&limit=1000").json()["events"]:
        count += len(events)
        after = events[-1]["id"]
    return count


@dataclass
class Outcome:
    statuses: collections.Counter[int] = field(default_factory=collections.Counter)
    accepted_writes: list[tuple[str, int, bytes]] = field(default_factory=list)


def send_hostile_requests(server: UwsgiServer, account: str, examples: int) -> Outcome:
    """``examples`` hostile requests, three in four at a real write route (so most bodies reach the
    JSON parser): none may get a 5xx, and each gets an answer unless its Content-Length lies."""
    outcome = Outcome()
    writes = st.tuples(
        st.just("POST"),
        st.sampled_from([f"/accounts/{account}/deposits", f"/accounts/{account}/withdrawals", "/accounts"]),
    )
    anything = st.tuples(
        st.one_of(
            st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS", "TRACE"]),
            st.from_regex(r"[A-Z]{1,12}", fullmatch=True),
        ),
        paths(account),
    )
    targets = st.integers(min_value=0, max_value=3).flatmap(lambda i: writes if i else anything)
    lengths = st.sampled_from(["true"] * 6 + ["shorter", "absent", "zero", "negative", "garbage"])

    @settings(
        max_examples=examples,
        deadline=None,
        database=None,
        derandomize=True,
        suppress_health_check=list(HealthCheck),
    )
    @given(target=targets, content_type=st.sampled_from(CONTENT_TYPES), length=lengths, body=bodies())
    def hostile(target: tuple[str, str], content_type: str, length: str, body: bytes) -> None:
        method, path = target
        headers = {"Content-Type": content_type} if content_type else {}
        claimed = {
            "true": str(len(body)),
            "shorter": str(max(0, len(body) - 3)),
            "zero": "0",
            "negative": "-7",
            "garbage": "abc12",  # a length longer than the body would only time out (test_http_edges)
        }.get(length)
        if claimed is not None:
            headers["Content-Length"] = claimed
        status, answer = send(server, method, path, headers, body)
        outcome.statuses[status] += 1
        # A server may drop a request whose Content-Length is not a length of its body.
        lying = length in ("negative", "garbage") or (length == "shorter" and body)
        assert status != 0 or lying, f"no answer to {method} {path[:100]!r} {headers}"
        assert status < 500, f"{status} for {method} {path[:100]!r} {headers} {body[:100]!r}"
        if 200 <= status < 300 and method == "POST":
            outcome.accepted_writes.append((path, status, answer))

    hostile()
    return outcome


def check_only_accepted_writes_changed_the_store(
    server: UwsgiServer, account: str, outcome: Outcome, before_witness: int, before_feed: int | None
) -> None:
    """Each accepted write stored exactly one event; nothing else changed the store."""
    created = [json.loads(answer)["id"] for _, status, answer in outcome.accepted_writes if status == 201]
    assert all(events_of(server, new) == 1 for new in created)
    moved = len(outcome.accepted_writes) - len(created)
    assert events_of(server, account) - before_witness == moved
    after_feed = feed_length(server)
    if before_feed is not None and after_feed is not None:
        assert after_feed - before_feed == len(outcome.accepted_writes)
