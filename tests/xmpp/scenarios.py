#!/usr/bin/env python3
"""XMPP client scenarios for Switchboard, driven by a real XMPP library (slixmpp).

    python3 tests/xmpp/scenarios.py <scenario> --host 127.0.0.1 --port 5222 --domain localhost \
        --ca cert.pem --user alice:secret --user bob:secret [--http http://127.0.0.1:5280] [--timeout 20]

The first --user plays "alice", the second "bob" (their names are taken from the arguments).
Every wait is on a condition with the deadline --timeout; a failure exits non-zero with a message
naming what was expected and what was seen. Progress goes to stderr. See README.md beside this
file for what each scenario proves.
"""

import argparse
import asyncio
import json
import logging
import ssl
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
import xml.etree.ElementTree as ET

from slixmpp import JID, ClientXMPP
from slixmpp.exceptions import IqError, IqTimeout
from slixmpp.xmlstream.handler import Callback
from slixmpp.xmlstream.matcher import StanzaPath

NS_CARBONS = "urn:xmpp:carbons:2"
NS_MAM = "urn:xmpp:mam:2"
AVAILABLE = ("available", "chat", "away", "xa", "dnd")

T0 = time.monotonic()


def log(text):
    print(f"[{time.monotonic() - T0:7.3f}] {text}", file=sys.stderr, flush=True)


class ScenarioFailure(Exception):
    """An assertion of a scenario did not hold."""


def check(condition, expected, seen):
    if not condition:
        raise ScenarioFailure(f"expected {expected}; saw {seen}")


# ---------------------------------------------------------------------------------------------
# Waiting on conditions


class Recorder:
    """Records what a client receives and lets a scenario wait, with a deadline, until a
    condition over the records holds."""

    def __init__(self, name, timeout):
        self.name = name
        self.timeout = timeout
        self.events = []  # (event name, payload), in arrival order
        self._waiters = []  # (predicate, future)

    def record(self, event, payload=None):
        self.events.append((event, payload))
        self.wake()

    def wake(self):
        for predicate, future in list(self._waiters):
            if not future.done():
                try:
                    if predicate():
                        future.set_result(True)
                except Exception as e:  # a broken predicate fails the wait, not the handler
                    future.set_exception(e)

    def mark(self):
        """A position in the records; `since(mark)` is everything recorded after it."""
        return len(self.events)

    def since(self, mark, *names):
        return [(n, p) for n, p in self.events[mark:] if not names or n in names]

    def payloads(self, name, mark=0):
        return [p for n, p in self.events[mark:] if n == name]

    async def until(self, predicate, what, seen=None):
        """Waits until `predicate()` is true; fails naming `what` (and `seen()`) at the deadline."""
        if predicate():
            return
        future = asyncio.get_running_loop().create_future()
        entry = (predicate, future)
        self._waiters.append(entry)
        try:
            await asyncio.wait_for(future, self.timeout)
        except asyncio.TimeoutError:
            detail = seen() if seen else self.summary()
            raise ScenarioFailure(
                f"{self.name}: timed out after {self.timeout}s waiting for {what}; saw {detail}"
            ) from None
        finally:
            self._waiters.remove(entry)

    def summary(self, last=12):
        return "[" + ", ".join(describe(n, p) for n, p in self.events[-last:]) + "]"


def describe(name, payload):
    if name == "message":
        return f"message(from={payload['from']}, type={payload['type']}, body={payload['body']!r})"
    if name == "presence":
        return (f"presence(from={payload['from']}, type={payload['type']}, "
                f"status={payload['status']!r})")
    if name == "roster_push":
        return "roster_push(" + ", ".join(f"{j}={s}" for j, s in payload.items()) + ")"
    return name


async def expect_iq_error(awaitable, condition, what):
    """Awaits an IQ that must fail with `condition` (an RFC 6120 stanza error)."""
    try:
        await awaitable
    except IqError as e:
        check(e.iq["error"]["condition"] == condition, f"{condition} for {what}",
              e.iq["error"]["condition"])
        return
    raise ScenarioFailure(f"expected {condition} for {what}; the request succeeded")


async def deadline(awaitable, timeout, what):
    try:
        return await asyncio.wait_for(awaitable, timeout)
    except asyncio.TimeoutError:
        raise ScenarioFailure(f"timed out after {timeout}s waiting for {what}") from None


# ---------------------------------------------------------------------------------------------
# XMPP clients


RECORDED_EVENTS = (
    "session_start", "session_resumed", "auth_success", "failed_auth", "failed_all_auth",
    "no_auth", "disconnected", "connection_failed", "ssl_invalid_chain", "stream_error",
    "sm_enabled", "sm_failed", "session_end", "carbon_received", "carbon_sent",
)
SESSION_OUTCOMES = ("session_start", "session_resumed", "failed_all_auth", "no_auth",
                    "ssl_invalid_chain", "stream_error", "disconnected", "connection_failed")


class Context:
    def __init__(self, args):
        self.host = args.host
        self.port = args.port
        self.tls_port = args.tls_port
        self.domain = args.domain
        self.ca = args.ca
        self.timeout = args.timeout
        self.http = args.http.rstrip("/") if args.http else None
        self.users = []  # [(name, password)], first is alice, second is bob
        for spec in args.user:
            name, sep, password = spec.partition(":")
            if not sep or not name:
                raise SystemExit(f"--user wants name:password, got {spec!r}")
            self.users.append((name, password))
        if len(self.users) < 2:
            raise SystemExit("two --user arguments are needed (alice, then bob)")
        self.clients = []

    @property
    def alice(self):
        return self.users[0][0]

    @property
    def bob(self):
        return self.users[1][0]

    def bare(self, user):
        return JID(f"{user}@{self.domain}")

    def password(self, user):
        return dict(self.users)[user]


def new_client(ctx, user, resource, mech="SCRAM-SHA-256", password=None, plugins=()):
    """A client for `user` that may only use STARTTLS, verifies the server against --ca and
    may only use SASL mechanism `mech`. Nothing is automatic about subscriptions."""
    jid = f"{user}@{ctx.domain}/{resource}"
    client = ClientXMPP(jid, ctx.password(user) if password is None else password,
                        sasl_mech=mech)
    client.enable_direct_tls = False
    client.enable_plaintext = False
    client.enable_starttls = True
    client.ca_certs = ctx.ca
    client.auto_authorize = None
    client.auto_subscribe = False
    for plugin in ("xep_0030", "xep_0199", *plugins):
        client.register_plugin(plugin)
    client.label = f"{user}/{resource}"
    client.mech_wanted = mech
    rec = client.rec = Recorder(client.label, ctx.timeout)
    for event in RECORDED_EVENTS:
        client.add_event_handler(event, lambda payload, event=event: rec.record(event, payload))
    client.add_event_handler("message", lambda m: rec.record("message", m))
    client.add_event_handler("presence", lambda p: rec.record("presence", p))
    client.add_event_handler("roster_update", lambda iq: rec.record(
        "roster_push",
        {str(j): item["subscription"] for j, item in iq["roster"]["items"].items()}))
    # A certificate that does not verify must fail the scenario (slixmpp would otherwise only
    # disconnect); handling the event means slixmpp leaves the disconnect to us.
    client.add_event_handler("ssl_invalid_chain", lambda e: client.abort())
    ctx.clients.append(client)
    return client


async def connect(ctx, client, expect="session_start"):
    """Connects `client` and waits for the outcome `expect` (session_start, session_resumed or
    failed_auth); on success checks that STARTTLS and the wanted SCRAM mechanism were used."""
    rec = client.rec
    mark = rec.mark()
    log(f"{client.label}: connecting to {ctx.host}:{ctx.port} (STARTTLS, {client.mech_wanted})")
    client.connect(host=ctx.host, port=ctx.port)
    outcomes = SESSION_OUTCOMES + (("failed_auth",) if expect == "failed_auth" else ())
    await rec.until(lambda: rec.since(mark, *outcomes), f"the connection's outcome ({expect})",
                    seen=lambda: rec.since(mark))
    outcome = rec.since(mark, *outcomes)[0][0]
    if rec.since(mark, "ssl_invalid_chain"):  # may come after the disconnect it causes
        raise ScenarioFailure(f"{client.label}: the server's certificate did not verify against "
                              f"{ctx.ca}: {rec.since(mark, 'ssl_invalid_chain')[0][1]}")
    if outcome in ("failed_all_auth", "no_auth") and "starttls" not in client.features:
        raise ScenarioFailure(f"{client.label}: expected STARTTLS before SASL; the stream went "
                              f"unencrypted (no STARTTLS offered), so SCRAM was refused")
    offered = sorted(client.plugin["feature_mechanisms"].mech_list)
    check(outcome == expect, f"{client.label} to reach {expect}",
          f"{outcome} (events: {[n for n, _ in rec.since(mark)]}; "
          f"SASL mechanisms offered: {offered})")
    if expect == "failed_auth":
        return
    check("starttls" in client.features and isinstance(client.socket, ssl.SSLObject),
          f"{client.label} to have negotiated STARTTLS",
          f"features {sorted(client.features)}, socket {type(client.socket).__name__}")
    used = client.plugin["feature_mechanisms"].mech.name
    check(used == client.mech_wanted, f"SASL mechanism {client.mech_wanted}", used)
    log(f"{client.label}: {outcome} as {client.boundjid.full} "
        f"({client.socket.version()}, SASL {used})")


async def start_session(ctx, client):
    """Connects, fetches the roster and sends initial presence, like an ordinary client."""
    await connect(ctx, client)
    await deadline(client.get_roster(timeout=ctx.timeout), ctx.timeout,
                   f"{client.label}'s roster")
    mark = client.rec.mark()
    client.send_presence()
    # The server reflects initial presence to the sender's own resources (RFC 6121 4.2.2).
    await client.rec.until(
        lambda: any(p["from"] == client.boundjid and p["type"] in AVAILABLE
                    for p in client.rec.payloads("presence", mark)),
        f"{client.label}'s own initial presence reflected back")


async def disconnect(ctx, client):
    if client.transport is None:
        return
    mark = client.rec.mark()
    client.disconnect()
    await client.rec.until(lambda: client.rec.since(mark, "disconnected"),
                           f"{client.label} to disconnect")


async def fetch_roster(ctx, client):
    """The server's roster for `client` as {bare jid: subscription} (a fresh, unversioned get)."""
    iq = client.make_iq_get()
    iq.enable("roster")
    result = await iq.send(timeout=ctx.timeout)
    return {str(j): item["subscription"] for j, item in result["roster"]["items"].items()}


async def server_round_trip(ctx, client):
    """An XEP-0199 ping to the server: when its answer comes, the server has processed
    everything this client sent before it."""
    await client.plugin["xep_0199"].ping(jid=JID(ctx.domain), timeout=ctx.timeout)


async def disco_features(ctx, client, jid):
    info = await client.plugin["xep_0030"].get_info(jid=jid, timeout=ctx.timeout)
    return set(info["disco_info"]["features"])


# Predicates over what a client received


def presences_from(client, bare, mark=0):
    return [p for p in client.rec.payloads("presence", mark) if p["from"].bare == bare]


def has_presence(client, bare, types, mark=0, show=None, status=None):
    return any(p["type"] in types
               and (show is None or p["show"] == show)
               and (status is None or p["status"] == status)
               for p in presences_from(client, bare, mark))


def chat_bodies_from(client, bare, mark=0):
    return [m["body"] for m in client.rec.payloads("message", mark)
            if m["from"].bare == bare and m["body"] and m["type"] == "chat"]


async def wait_presence(client, bare, types, what, mark=0, show=None, status=None):
    await client.rec.until(
        lambda: has_presence(client, bare, types, mark, show, status), what,
        seen=lambda: [describe("presence", p) for p in presences_from(client, bare, mark)])


async def wait_chat(client, bare, bodies, what, mark=0):
    """Waits until every body in `bodies` has come from `bare` as a chat message."""
    wanted = list(bodies)
    await client.rec.until(
        lambda: all(b in chat_bodies_from(client, bare, mark) for b in wanted), what,
        seen=lambda: chat_bodies_from(client, bare, mark))


async def wait_roster_push(client, bare, subscription, what):
    await client.rec.until(
        lambda: any(push.get(str(bare)) == subscription
                    for push in client.rec.payloads("roster_push")), what)


async def make_contacts(ctx, alice, bob):
    """alice asks bob; bob accepts and asks back; alice accepts. Both rosters end at `both`
    and each sees the other available."""
    a, b = ctx.bare(ctx.alice), ctx.bare(ctx.bob)
    log(f"contacts: {a} adds {b} to the roster and asks for a subscription")
    await deadline(alice.update_roster(b, name=ctx.bob, timeout=ctx.timeout), ctx.timeout,
                   f"{alice.label}'s roster set for {b}")
    bob_mark, alice_mark = bob.rec.mark(), alice.rec.mark()
    alice.send_presence(pto=b, ptype="subscribe")
    await wait_presence(bob, a, ("subscribe",), f"a subscribe from {a}", bob_mark)
    log(f"contacts: {b} got the request; answers subscribed and asks back")
    bob.send_presence(pto=a, ptype="subscribed")
    bob.send_presence(pto=a, ptype="subscribe")
    await wait_presence(alice, b, ("subscribed",), f"a subscribed from {b}", alice_mark)
    await wait_presence(alice, b, ("subscribe",), f"a subscribe from {b}", alice_mark)
    log(f"contacts: {a} got subscribed and the request back; answers subscribed")
    alice.send_presence(pto=b, ptype="subscribed")
    await wait_roster_push(alice, b, "both", f"a roster push for {b} with subscription both")
    await wait_roster_push(bob, a, "both", f"a roster push for {a} with subscription both")
    for client, peer in ((alice, b), (bob, a)):
        roster = await fetch_roster(ctx, client)
        check(roster.get(str(peer)) == "both",
              f"{client.label}'s roster to hold {peer} with subscription both", roster)
    await wait_presence(alice, b, AVAILABLE, f"{b} available", alice_mark)
    await wait_presence(bob, a, AVAILABLE, f"{a} available", bob_mark)
    log("contacts: both rosters show both; each sees the other available")


async def two_contacts(ctx, alice_resource="desk", alice_plugins=(), bob_plugins=()):
    """Logs alice and bob in and makes them contacts."""
    alice = new_client(ctx, ctx.alice, alice_resource, plugins=alice_plugins)
    bob = new_client(ctx, ctx.bob, "desk", plugins=bob_plugins)
    await start_session(ctx, alice)
    await start_session(ctx, bob)
    await make_contacts(ctx, alice, bob)
    return alice, bob


# ---------------------------------------------------------------------------------------------
# Scenarios


async def scenario_login(ctx):
    alice = new_client(ctx, ctx.alice, "login")
    await connect(ctx, alice)
    roster = await fetch_roster(ctx, alice)
    check(roster == {}, f"{ctx.alice}'s roster to be empty", roster)
    await deadline(alice.get_roster(timeout=ctx.timeout), ctx.timeout, "the roster (library)")
    mark = alice.rec.mark()
    alice.send_presence()
    await alice.rec.until(
        lambda: any(p["from"] == alice.boundjid for p in alice.rec.payloads("presence", mark)),
        "alice's initial presence reflected back")
    check(alice.boundjid.resource == "login", "the requested resource to be bound",
          alice.boundjid.full)
    await disconnect(ctx, alice)

    wrong = new_client(ctx, ctx.alice, "wrong", password=ctx.password(ctx.alice) + "-wrong")
    await connect(ctx, wrong, expect="failed_auth")
    check(not wrong.rec.payloads("auth_success") and not wrong.rec.payloads("session_start"),
          "no session with a wrong password", [n for n, _ in wrong.rec.events])
    condition = wrong.rec.payloads("failed_auth")[0]["condition"]
    check(condition == "not-authorized", "SASL <failure> with <not-authorized/>", condition)
    log(f"{wrong.label}: the wrong password was refused ({condition})")
    await disconnect(ctx, wrong)

    sha1 = new_client(ctx, ctx.alice, "sha1", mech="SCRAM-SHA-1")
    await connect(ctx, sha1)
    await disconnect(ctx, sha1)


async def scenario_contacts(ctx):
    alice, bob = await two_contacts(ctx)
    a, b = ctx.bare(ctx.alice), ctx.bare(ctx.bob)

    mark = alice.rec.mark()
    bob.send_presence(pshow="away", pstatus="Out to lunch")
    await wait_presence(alice, b, ("away",), f"{b} away with status 'Out to lunch'", mark,
                        show="away", status="Out to lunch")
    log("contacts: alice saw bob away with his status text")

    to_bob, to_alice = "Hello Bob, <&> ünïcødé ✓", "Hi Alice!"
    mark = bob.rec.mark()
    alice.send_message(mto=b, mbody=to_bob, mtype="chat")
    await wait_chat(bob, a, [to_bob], f"alice's chat {to_bob!r}", mark)
    mark = alice.rec.mark()
    bob.send_message(mto=a, mbody=to_alice, mtype="chat")
    await wait_chat(alice, b, [to_alice], f"bob's chat {to_alice!r}", mark)
    log("contacts: chat messages crossed both ways with exact bodies")

    mark = alice.rec.mark()
    await disconnect(ctx, bob)
    await wait_presence(alice, b, ("unavailable",), f"{b} unavailable after he left", mark)
    log("contacts: alice saw bob go unavailable")
    await disconnect(ctx, alice)


async def scenario_resume(ctx):
    alice, bob = await two_contacts(ctx, bob_plugins=("xep_0198",))
    a, b = ctx.bare(ctx.alice), ctx.bare(ctx.bob)
    sm = bob.plugin["xep_0198"]
    await bob.rec.until(lambda: bob.rec.payloads("sm_enabled") or bob.rec.payloads("sm_failed"),
                        "stream management to be enabled")
    check(bob.rec.payloads("sm_enabled") and sm.sm_id,
          "<enabled resume='true' id=...> for bob",
          f"sm_failed={bool(bob.rec.payloads('sm_failed'))}, id={sm.sm_id!r}")
    log(f"resume: bob has stream management with resumption (id {sm.sm_id})")

    bodies = [f"resume-{n:02d}" for n in range(1, 26)]
    for body in bodies[:10]:
        alice.send_message(mto=b, mbody=body, mtype="chat")
    await wait_chat(bob, a, bodies[:10], "messages 1-10")
    sm.send_ack()
    await server_round_trip(ctx, bob)  # the server has read bob's <a/> before the drop
    log(f"resume: bob received 1-10 and acknowledged h={sm.handled}; dropping his TCP connection")

    mark = bob.rec.mark()
    bob.transport.abort()
    await bob.rec.until(lambda: bob.rec.since(mark, "disconnected"), "bob's connection to drop")
    check(not bob.rec.since(mark, "session_end"), "the SM session kept over the drop",
          "session_end")

    for body in bodies[10:20]:
        alice.send_message(mto=b, mbody=body, mtype="chat")
    await server_round_trip(ctx, alice)  # the server has taken 11-20 before bob comes back
    log("resume: alice sent 11-20 while bob was away; bob reconnects")

    mark = bob.rec.mark()
    await connect(ctx, bob, expect="session_resumed")
    check(not bob.rec.since(mark, "session_start"), "the stream resumed, not a new session",
          "session_start")
    await wait_chat(bob, a, bodies[:20], "messages 1-20 after resumption")
    log("resume: resumed; bob has 1-20; alice sends 21-25")

    for body in bodies[20:]:
        alice.send_message(mto=b, mbody=body, mtype="chat")
    alice.send_message(mto=b, mbody="resume-end", mtype="chat")
    await wait_chat(bob, a, ["resume-end"], "the closing message")
    got = [x for x in chat_bodies_from(bob, a) if x != "resume-end"]
    check(got == bodies, f"bob to hold exactly {bodies[0]}..{bodies[-1]}, once each, in order",
          got)
    log("resume: bob got each of the 25 messages exactly once, in order")
    await disconnect(ctx, bob)
    await disconnect(ctx, alice)


async def scenario_unacked(ctx):
    """Stanzas a client never acknowledged are not lost with its connection: a new session
    (not a resumption) gets them from the message cache, once each."""
    alice, bob = await two_contacts(ctx, bob_plugins=("xep_0198",))
    a, b = ctx.bare(ctx.alice), ctx.bare(ctx.bob)
    sm = bob.plugin["xep_0198"]
    await bob.rec.until(lambda: bob.rec.payloads("sm_enabled"), "stream management to be enabled")
    sm.send_ack = lambda: None  # this client reads but never acknowledges
    bodies = [f"unacked-{n}" for n in range(1, 6)]
    for body in bodies:
        alice.send_message(mto=b, mbody=body, mtype="chat")
    await wait_chat(bob, a, bodies, "the 5 messages (read, never acknowledged)")
    mark = bob.rec.mark()
    bob.transport.abort()
    await bob.rec.until(lambda: bob.rec.since(mark, "disconnected"), "bob's connection to drop")
    log("unacked: bob read 5 messages without acknowledging them and lost his connection")

    phone = new_client(ctx, ctx.bob, "phone")
    await start_session(ctx, phone)
    await wait_chat(phone, a, bodies, "the 5 unacknowledged messages in a new session")
    alice.send_message(mto=b, mbody="unacked-end", mtype="chat")
    await wait_chat(phone, a, ["unacked-end"], "a later message")
    got = [x for x in chat_bodies_from(phone, a) if x != "unacked-end"]
    check(got == bodies, "each unacknowledged message once, in order, in the new session", got)
    log("unacked: the new session got all 5 from the message cache, once each")
    for client in (phone, alice):
        await disconnect(ctx, client)


async def scenario_takeover(ctx):
    """A phone changes networks: its old connection still looks alive to the server when the
    new one resumes the session. The resumption takes the session over; the old connection
    is told `conflict`; nothing is lost or doubled."""
    alice, bob = await two_contacts(ctx, bob_plugins=("xep_0198",))
    a, b = ctx.bare(ctx.alice), ctx.bare(ctx.bob)
    old = bob.plugin["xep_0198"]
    await bob.rec.until(lambda: bob.rec.payloads("sm_enabled"), "stream management to be enabled")
    errors = []
    bob.add_event_handler("stream_error", lambda e: errors.append(e["condition"]))
    bodies = [f"takeover-{n:02d}" for n in range(1, 11)]
    for body in bodies[:5]:
        alice.send_message(mto=b, mbody=body, mtype="chat")
    await wait_chat(bob, a, bodies[:5], "messages 1-5 on the old connection")
    old.send_ack = lambda: None  # from here the old connection acknowledges nothing
    for body in bodies[5:8]:
        alice.send_message(mto=b, mbody=body, mtype="chat")
    await wait_chat(bob, a, bodies[5:8], "messages 6-8 (not acknowledged)")
    handled_before_6 = old.handled - 3

    # The new connection resumes with what the client had acknowledged (h up to 5).
    new = new_client(ctx, ctx.bob, "desk", plugins=("xep_0198",))
    new.plugin["xep_0198"].sm_id = old.sm_id
    new.plugin["xep_0198"].handled = handled_before_6
    await connect(ctx, new, expect="session_resumed")
    await bob.rec.until(lambda: errors, "the old connection to be told why it ends",
                        seen=lambda: errors)
    check(errors == ["conflict"], "conflict on the replaced connection", errors)
    log("takeover: the resumption took the session over; the old connection got conflict")
    await wait_chat(new, a, bodies[5:8], "the unacknowledged 6-8 resent on the new connection")
    for body in bodies[8:]:
        alice.send_message(mto=b, mbody=body, mtype="chat")
    alice.send_message(mto=b, mbody="takeover-end", mtype="chat")
    await wait_chat(new, a, ["takeover-end"], "the closing message")
    got = [x for x in chat_bodies_from(new, a) if x != "takeover-end"]
    check(got == bodies[5:], "6-10 once each, in order, on the new connection", got)
    log("takeover: 6-10 arrived once each on the new connection")
    for client in (new, alice):
        await disconnect(ctx, client)


async def scenario_iq(ctx):
    """IQs to a full JID are routed to that client, and its answer back; only between
    contacts (or one person's own resources), and a stranger reads like nobody there."""
    alice = new_client(ctx, ctx.alice, "desk")
    bob = new_client(ctx, ctx.bob, "desk")
    for client in (alice, bob):
        await start_session(ctx, client)
    await expect_iq_error(alice.plugin["xep_0199"].send_ping(bob.boundjid, timeout=ctx.timeout),
                          "service-unavailable", "a ping to a stranger's resource")
    log("iq: a stranger's resource reads like nobody there")
    await make_contacts(ctx, alice, bob)
    pong = await alice.plugin["xep_0199"].send_ping(bob.boundjid, timeout=ctx.timeout)
    check(pong["type"] == "result" and pong["from"] == bob.boundjid,
          f"a ping result from {bob.boundjid}", f"{pong['type']} from {pong['from']}")
    log("iq: alice pinged bob's client through the server and got its answer")
    info = await alice.plugin["xep_0030"].get_info(jid=bob.boundjid, timeout=ctx.timeout)
    features = info["disco_info"]["features"]
    check("urn:xmpp:ping" in features, "bob's client to answer disco#info with its features",
          sorted(features))
    log("iq: bob's client answered alice's disco#info query")
    phone = new_client(ctx, ctx.alice, "phone")
    await start_session(ctx, phone)
    await phone.plugin["xep_0199"].send_ping(alice.boundjid, timeout=ctx.timeout)
    log("iq: one resource of alice's reached another")
    mark = alice.rec.mark()
    phone.send_message(mto=alice.boundjid, mbody="from my phone", mtype="chat")
    await alice.rec.until(lambda: any(m["from"] == phone.boundjid and m["body"] == "from my phone"
                                      for m in alice.rec.payloads("message", mark)),
                          "a message from alice's phone to her desk resource")
    phone_mark = phone.rec.mark()
    phone.add_event_handler("message_error", lambda m: phone.rec.record("message_error", m))
    phone.send_message(mto=JID(f"{ctx.alice}@{ctx.domain}"), mbody="note to self", mtype="chat")
    await phone.rec.until(lambda: phone.rec.payloads("message_error", phone_mark),
                          "an error for a message to her own bare address (not kept)")
    log("iq: a message to another own resource arrived; one to herself got an error")
    gone = JID(f"{ctx.bob}@{ctx.domain}/nowhere")
    await expect_iq_error(alice.plugin["xep_0199"].send_ping(gone, timeout=ctx.timeout),
                          "service-unavailable", "a ping to a resource that is not bound")
    for client in (phone, alice, bob):
        await disconnect(ctx, client)


async def scenario_direct_tls(ctx):
    """XEP-0368: TLS from the first byte on the direct TLS port, then SCRAM as usual."""
    check(ctx.tls_port, "--tls-port for the direct_tls scenario", None)
    alice = new_client(ctx, ctx.alice, "direct")
    alice.enable_direct_tls, alice.enable_starttls = True, False
    mark = alice.rec.mark()
    log(f"{alice.label}: connecting to {ctx.host}:{ctx.tls_port} (direct TLS)")
    alice.connect(host=ctx.host, port=ctx.tls_port)
    await alice.rec.until(lambda: alice.rec.since(mark, *SESSION_OUTCOMES),
                          "the direct TLS connection's outcome", seen=lambda: alice.rec.since(mark))
    outcome = alice.rec.since(mark, *SESSION_OUTCOMES)[0][0]
    check(outcome == "session_start", "a session over direct TLS", outcome)
    check(isinstance(alice.socket, ssl.SSLObject) and "starttls" not in alice.features,
          "TLS from the start, without STARTTLS",
          f"socket {type(alice.socket).__name__}, features {sorted(alice.features)}")
    used = alice.plugin["feature_mechanisms"].mech.name
    check(used == "SCRAM-SHA-256", "SCRAM-SHA-256 over direct TLS", used)
    roster = await fetch_roster(ctx, alice)
    check(roster == {}, "an empty roster", roster)
    log(f"direct_tls: {alice.boundjid} online over {alice.socket.version()}")
    await disconnect(ctx, alice)


async def scenario_csi(ctx):
    """XEP-0352: an inactive client gets messages at once but no presence churn or typing
    notifications; when it becomes active it gets each contact's newest presence once."""
    alice, bob = await two_contacts(ctx, alice_plugins=("xep_0085",), bob_plugins=("xep_0085",))
    a, b = ctx.bare(ctx.alice), ctx.bare(ctx.bob)
    alice.add_event_handler("chatstate_composing", lambda m: alice.rec.record("composing", m))
    # A first message makes the conversation that typing notifications belong to.
    bob.send_message(mto=a, mbody="hello", mtype="chat")
    await wait_chat(alice, b, ["hello"], "bob's first message")
    alice.send_raw("<inactive xmlns='urn:xmpp:csi:0'/>")
    await server_round_trip(ctx, alice)  # the server has read <inactive/>
    mark = alice.rec.mark()
    bob.send_presence(pshow="away", pstatus="first")
    bob.send_presence(pshow="away", pstatus="second")
    bob.send_presence(pshow="dnd", pstatus="last")
    composing = bob.make_message(mto=a, mtype="chat")
    composing["chat_state"] = "composing"
    composing.send()
    bob.send_message(mto=a, mbody="while you were inactive", mtype="chat")
    # Events reach alice in order: once the message is here, the presences and the typing
    # notification before it have been dealt with.
    await wait_chat(alice, b, ["while you were inactive"], "the message, at once", mark)
    churn = [p for p in presences_from(alice, b, mark) if p["type"] in ("away", "dnd")]
    check(not churn, "no presence from bob while inactive", [str(p["status"]) for p in churn])
    states = alice.rec.payloads("composing", mark)
    check(not states, "no typing notification while inactive", [str(m) for m in states])
    log("csi: inactive alice got the message at once and no presence or typing")
    alice.send_raw("<active xmlns='urn:xmpp:csi:0'/>")
    await wait_presence(alice, b, ("dnd",), "bob's newest presence on becoming active", mark)
    seen = [(p["type"], p["status"]) for p in presences_from(alice, b, mark)]
    check(seen == [("dnd", "last")], "only the newest presence, once", seen)
    log("csi: active again, alice got bob's newest presence only")
    mark = alice.rec.mark()
    composing = bob.make_message(mto=a, mtype="chat")
    composing["chat_state"] = "composing"
    composing.send()
    await alice.rec.until(lambda: alice.rec.payloads("composing", mark),
                          "bob's typing notification now that alice is active")
    for client in (alice, bob):
        await disconnect(ctx, client)


async def scenario_extras(ctx):
    """Receipts and chat markers from the hub's delivery and read cursors (XEP-0184, 0333),
    blocking (XEP-0191), the display name as vCard (XEP-0054), directed presence."""
    plugins = ("xep_0184", "xep_0333", "xep_0191", "xep_0054")
    alice, bob = await two_contacts(ctx, alice_plugins=plugins, bob_plugins=plugins)
    a, b = ctx.bare(ctx.alice), ctx.bare(ctx.bob)
    for client in (alice, bob):
        for event in ("receipt_received", "marker_displayed", "message_error"):
            client.add_event_handler(event, lambda m, c=client, e=event: c.rec.record(e, m))

    # Delivered, then read.
    mark = alice.rec.mark()
    msg = alice.make_message(mto=b, mbody="did you get this?", mtype="chat")
    msg["request_receipt"] = True
    msg["markable"] = True
    msg.send()
    sent_id = msg["id"]
    await wait_chat(bob, a, ["did you get this?"], "alice's message")
    await alice.rec.until(lambda: any(m["receipt"] == sent_id
                                      for m in alice.rec.payloads("receipt_received", mark)),
                          "a delivery receipt for alice's message")
    bob.plugin["xep_0333"].send_marker(a, sent_id, "displayed")
    await alice.rec.until(lambda: any(m["displayed"]["id"] == sent_id
                                      for m in alice.rec.payloads("marker_displayed", mark)),
                          "a displayed marker for alice's message")
    log("extras: alice's message was marked delivered, then displayed")

    # The display name as a vCard, read by a contact.
    card = alice.plugin["xep_0054"].make_vcard()
    card["FN"] = "Alice Liddell"
    await deadline(alice.plugin["xep_0054"].publish_vcard(card, timeout=ctx.timeout),
                   ctx.timeout, "alice to publish her vCard")
    got = await deadline(bob.plugin["xep_0054"].get_vcard(a, local=False, timeout=ctx.timeout),
                         ctx.timeout, "bob to read alice's vCard")
    check(got["vcard_temp"]["FN"] == "Alice Liddell", "alice's display name in her vCard",
          got["vcard_temp"]["FN"])
    log("extras: bob read alice's display name from her vCard")

    # Blocking: nothing from bob reaches alice, and bob's message fails like one to nobody.
    await deadline(alice.plugin["xep_0191"].block([b], timeout=ctx.timeout), ctx.timeout,
                   "alice to block bob")
    blocked = await alice.plugin["xep_0191"].get_blocked_jids(timeout=ctx.timeout)
    check(blocked == {b}, "bob on alice's blocklist", blocked)
    mark, bob_mark = alice.rec.mark(), bob.rec.mark()
    bob.send_message(mto=a, mbody="let me in", mtype="chat")
    await bob.rec.until(lambda: bob.rec.payloads("message_error", bob_mark),
                        "an error for bob's message to someone who blocks him")
    error = bob.rec.payloads("message_error", bob_mark)[0]
    check(error["error"]["condition"] == "service-unavailable",
          "service-unavailable, as for an unknown user", error["error"]["condition"])
    await deadline(alice.plugin["xep_0191"].unblock([b], timeout=ctx.timeout), ctx.timeout,
                   "alice to unblock bob")
    bob.send_message(mto=a, mbody="thanks", mtype="chat")
    await wait_chat(alice, b, ["thanks"], "bob's message after the unblock", mark)
    check("let me in" not in chat_bodies_from(alice, b, mark), "nothing from bob while blocked",
          chat_bodies_from(alice, b, mark))
    log("extras: a blocked contact's message failed like one to nobody; unblocked, it went")

    # Directed presence to one of bob's resources, taken back when alice leaves.
    mark = bob.rec.mark()
    alice.send_presence(pto=bob.boundjid, pstatus="just for you")
    await bob.rec.until(lambda: any(p["from"] == alice.boundjid and p["status"] == "just for you"
                                    for p in bob.rec.payloads("presence", mark)),
                        "alice's directed presence")
    await disconnect(ctx, alice)
    await bob.rec.until(lambda: any(p["from"] == alice.boundjid and p["type"] == "unavailable"
                                    for p in bob.rec.payloads("presence", mark)),
                        "unavailable from the resource that sent directed presence")
    log("extras: directed presence arrived and was taken back when alice left")
    await disconnect(ctx, bob)


async def scenario_shutdown(ctx):
    """Run by a test that stops the server once this says it is ready: the stream must end
    with the stream error system-shutdown, not just a dropped connection."""
    alice = new_client(ctx, ctx.alice, "desk", plugins=("xep_0198",))
    errors = []
    alice.add_event_handler("stream_error", lambda e: errors.append(e["condition"]))
    await start_session(ctx, alice)
    mark = alice.rec.mark()
    log("shutdown: ready")
    await alice.rec.until(lambda: alice.rec.since(mark, "disconnected"),
                          "the server to close the stream")
    check(errors == ["system-shutdown"], "the stream error system-shutdown before the close",
          errors)
    log("shutdown: the stream ended with system-shutdown")


def mam_bodies(page):
    return [r["mam_result"]["forwarded"]["stanza"]["body"] for r in page["mam"]["results"]]


async def scenario_mam(ctx):
    alice, bob = await two_contacts(ctx)
    a, b = ctx.bare(ctx.alice), ctx.bare(ctx.bob)
    bodies = [f"mam-{n:02d}" for n in range(1, 16)]
    for body in bodies:
        alice.send_message(mto=b, mbody=body, mtype="chat")
    await wait_chat(bob, a, bodies, "the 15 messages")
    log("mam: bob received 15 messages; a fresh alice client reads her archive")

    reader = new_client(ctx, ctx.alice, "archive", plugins=("xep_0313",))
    await connect(ctx, reader)
    features = await disco_features(ctx, reader, a)
    check(NS_MAM in features, f"{NS_MAM} among the disco#info features of {a}", sorted(features))
    mam = reader.plugin["xep_0313"]

    got, after, pages = [], None, 0
    while True:
        rsm = {"max": 5} if after is None else {"max": 5, "after": after}
        page = await deadline(mam.retrieve(with_jid=b, rsm=rsm, timeout=ctx.timeout),
                              ctx.timeout, f"MAM page {pages + 1}")
        pages += 1
        page_bodies = mam_bodies(page)
        fin = page["mam_fin"]
        log(f"mam: page {pages}: {page_bodies} complete={fin['complete']} "
            f"first={fin['rsm']['first']!r} last={fin['rsm']['last']!r}")
        check(len(page_bodies) <= 5, "at most 5 results per page", page_bodies)
        got += page_bodies
        if str(fin["complete"]).lower() in ("true", "1"):
            break
        check(page_bodies, "a page with results or <fin complete='true'>", "an empty page")
        check(pages < 5, "the archive to end within 4 pages", f"{pages} pages: {got}")
        after = fin["rsm"]["last"]
    check(got == bodies, "the archive with bob to hold the 15 bodies in order, once each", got)

    last_page = mam.retrieve(with_jid=b, iterator=True, reverse=True, rsm={"max": 5})
    try:
        page = await deadline(last_page.next(), ctx.timeout, "the last MAM page")
    except StopAsyncIteration:
        raise ScenarioFailure("expected the last page (<before/>) to hold 5 results; "
                              "the server answered with an error or an empty page") from None
    newest = mam_bodies(page)
    check(newest == bodies[-5:], "the last page (<before/>, max 5) to hold the newest 5 in order",
          newest)
    log("mam: all 15 in order over RSM pages of 5; the last page holds the newest 5")
    for client in (reader, bob, alice):
        await disconnect(ctx, client)


def carbon_inner(msg, kind):
    return msg[kind]  # the forwarded <message/> inside <received/> or <sent/>


async def scenario_carbons(ctx):
    phone, bob = await two_contacts(ctx, "phone", alice_plugins=("xep_0280",))
    laptop = new_client(ctx, ctx.alice, "laptop", plugins=("xep_0280",))
    await start_session(ctx, laptop)
    a, b = ctx.bare(ctx.alice), ctx.bare(ctx.bob)
    features = await disco_features(ctx, phone, JID(ctx.domain))
    check(NS_CARBONS in features, f"{NS_CARBONS} among the server's disco#info features",
          sorted(features))
    for client in (phone, laptop):
        await deadline(client.plugin["xep_0280"].enable(timeout=ctx.timeout), ctx.timeout,
                       f"{client.label} to enable carbons")
    log("carbons: enabled on alice/phone and alice/laptop")

    def got_incoming(client, body, mark):
        direct = [m for m in client.rec.payloads("message", mark)
                  if m["from"].bare == b and m["body"] == body]
        carbons = [m for m in client.rec.payloads("carbon_received", mark)
                   if carbon_inner(m, "carbon_received")["from"].bare == b
                   and carbon_inner(m, "carbon_received")["body"] == body]
        return direct or carbons

    incoming = "to both of alice's devices"
    marks = {c: c.rec.mark() for c in (phone, laptop)}
    bob.send_message(mto=a, mbody=incoming, mtype="chat")
    for client in (phone, laptop):
        await client.rec.until(lambda c=client: got_incoming(c, incoming, marks[c]),
                               f"bob's {incoming!r} (directly or as a received carbon)")
        how = ("received carbon" if client.rec.payloads("carbon_received", marks[client])
               else "directly")
        log(f"carbons: {client.label} got bob's message {how}")

    # A message to one full JID is copied to the other carbon-enabled resource.
    only_phone = "to alice's phone only"
    marks = {c: c.rec.mark() for c in (phone, laptop)}
    bob.send_message(mto=phone.boundjid, mbody=only_phone, mtype="chat")
    await wait_chat(phone, b, [only_phone], f"bob's {only_phone!r} directly", marks[phone])

    def received_carbon():
        return [m for m in laptop.rec.payloads("carbon_received", marks[laptop])
                if carbon_inner(m, "carbon_received")["body"] == only_phone]

    await laptop.rec.until(received_carbon, f"a received carbon of {only_phone!r}")
    inner = carbon_inner(received_carbon()[0], "carbon_received")
    check(inner["from"].bare == b and inner["to"] == phone.boundjid,
          f"the received carbon to show {b} -> {phone.boundjid}",
          f"{inner['from']} -> {inner['to']}")
    check(only_phone not in chat_bodies_from(laptop, b, marks[laptop]),
          f"{laptop.label} to get {only_phone!r} only as a carbon", "it directly as well")
    log("carbons: bob's message to alice/phone reached alice/laptop as a received carbon")

    outgoing = "sent from the phone"
    laptop_mark, bob_mark = laptop.rec.mark(), bob.rec.mark()
    phone.send_message(mto=b, mbody=outgoing, mtype="chat")

    def sent_carbon():
        return [m for m in laptop.rec.payloads("carbon_sent", laptop_mark)
                if carbon_inner(m, "carbon_sent")["body"] == outgoing]

    await laptop.rec.until(sent_carbon, f"a sent carbon of {outgoing!r}")
    inner = carbon_inner(sent_carbon()[0], "carbon_sent")
    check(inner["to"].bare == b and inner["from"] == phone.boundjid,
          f"the sent carbon to show {phone.boundjid} -> {b}", f"{inner['from']} -> {inner['to']}")
    await wait_chat(bob, a, [outgoing], f"alice's {outgoing!r}", bob_mark)
    log("carbons: alice/laptop got the sent carbon; bob got the message")

    # <private/> (XEP-0280 §7): no copy to the other resource.
    laptop_mark, bob_mark = laptop.rec.mark(), bob.rec.mark()
    secret = phone.make_message(mto=b, mbody="just between us", mtype="chat")
    secret.append(ET.fromstring(f"<private xmlns='{NS_CARBONS}'/>"))
    secret.send()
    phone.send_message(mto=b, mbody="after the secret", mtype="chat")
    await laptop.rec.until(
        lambda: any(carbon_inner(m, "carbon_sent")["body"] == "after the secret"
                    for m in laptop.rec.payloads("carbon_sent", laptop_mark)),
        "a sent carbon of the message after the private one")
    copied = [carbon_inner(m, "carbon_sent")["body"]
              for m in laptop.rec.payloads("carbon_sent", laptop_mark)]
    check(copied == ["after the secret"], "no carbon of the private message", copied)
    await wait_chat(bob, a, ["just between us", "after the secret"], "both messages", bob_mark)
    log("carbons: a private message reached bob with no copy on alice/laptop")
    for client in (laptop, phone, bob):
        await disconnect(ctx, client)


NS_NICK = "http://jabber.org/protocol/nick"


def nicknames(items):
    """The nicknames in a pubsub items result."""
    return [item["payload"].text for item in items["pubsub"]["items"]
            if item["payload"] is not None and item["payload"].tag == f"{{{NS_NICK}}}nick"]


async def scenario_pep(ctx):
    plugins = ("xep_0060", "xep_0163", "xep_0172")
    alice = new_client(ctx, ctx.alice, "desk", plugins=plugins)
    bob = new_client(ctx, ctx.bob, "desk", plugins=plugins)
    for client in (alice, bob):
        await start_session(ctx, client)
    a, b = ctx.bare(ctx.alice), ctx.bare(ctx.bob)
    features = await disco_features(ctx, alice, JID(a))
    check("http://jabber.org/protocol/pubsub#publish" in features,
          "pubsub#publish among the account's disco#info features", sorted(features))

    await deadline(alice.plugin["xep_0172"].publish_nick("Alice Liddell", timeout=ctx.timeout),
                   ctx.timeout, "alice to publish her nickname")
    log("pep: alice published her nickname")
    # Not a contact yet: bob may not read it, and it reads like no node at all.
    await expect_iq_error(bob.plugin["xep_0060"].get_items(JID(a), NS_NICK, timeout=ctx.timeout),
                          "item-not-found", "a stranger reading alice's nickname")
    log("pep: a stranger cannot read it")

    await make_contacts(ctx, alice, bob)
    nicks = []
    bob.add_event_handler("user_nick_publish",
                          lambda msg: (nicks.append(msg["pubsub_event"]["items"]["item"]["nick"]["nick"]),
                                       bob.rec.record("nick")))
    items = await bob.plugin["xep_0060"].get_items(JID(a), NS_NICK, timeout=ctx.timeout)
    got = nicknames(items)
    check(got == ["Alice Liddell"], "bob to read alice's nickname as a contact", got)
    log("pep: bob reads it as a contact")

    await deadline(alice.plugin["xep_0172"].publish_nick("Alice in Wonderland",
                                                         timeout=ctx.timeout),
                   ctx.timeout, "alice to publish a new nickname")
    await bob.rec.until(lambda: "Alice in Wonderland" in nicks,
                        "a PEP notification of alice's new nickname", seen=lambda: nicks)
    log("pep: bob was notified of the new nickname")
    mallory = ET.fromstring(f"<nick xmlns='{NS_NICK}'>mallory</nick>")
    await expect_iq_error(bob.plugin["xep_0060"].publish(JID(a), NS_NICK, payload=mallory,
                                                         timeout=ctx.timeout),
                          "forbidden", "bob publishing to alice's node")

    # Kept in the store: a new session of alice's reads the newest one back.
    await disconnect(ctx, alice)
    again = new_client(ctx, ctx.alice, "again", plugins=plugins)
    await start_session(ctx, again)
    items = await again.plugin["xep_0060"].get_items(JID(a), NS_NICK, timeout=ctx.timeout)
    got = nicknames(items)
    check(got == ["Alice in Wonderland"], "the newest nickname only, kept across sessions", got)
    log("pep: the node keeps the newest item across sessions")
    for client in (again, bob):
        await disconnect(ctx, client)


# ---------------------------------------------------------------------------------------------
# The web line (HTTP JSON API and long-poll), standard library only


class WebClient:
    """bob on the web line: bearer login, one long-poll session, events recorded."""

    POLL_SECONDS = 5

    def __init__(self, ctx, user):
        self.ctx = ctx
        self.user = user
        self.token = None
        self.session = None
        self.position = 0
        self.rec = Recorder(f"{user} (web)", ctx.timeout)
        self.poller = None
        self.stopping = False

    def _request(self, method, path, body=None, timeout=None):
        headers = {"accept": "application/json"}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["content-type"] = "application/json"
        if self.token:
            headers["authorization"] = f"Bearer {self.token}"
        req = urllib.request.Request(self.ctx.http + path, data=data, method=method,
                                     headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=timeout or self.ctx.timeout) as resp:
                status, text = resp.status, resp.read().decode()
        except urllib.error.HTTPError as e:
            status, text = e.code, e.read().decode(errors="replace")
        except OSError as e:  # refused, reset, timed out: no HTTP answer at all
            return 0, f"no answer: {e}"
        try:
            return status, (json.loads(text) if text.strip() else None)
        except ValueError:
            return status, text

    async def call(self, method, path, body=None, expect=(200,), timeout=None):
        status, answer = await asyncio.to_thread(self._request, method, path, body, timeout)
        check(status in expect, f"{method} {path} to answer {expect}", f"{status} {answer}")
        return answer

    async def login(self, password):
        answer = await self.call("POST", "/api/v1/login", {"user": self.user, "password": password})
        check(answer.get("token"), "a bearer token from /api/v1/login", answer)
        self.token = answer["token"]
        opened = await self.call("POST", "/api/v1/sessions", expect=(201,))
        self.session, self.position = opened["session"], opened.get("position", 0)
        log(f"web: {answer.get('user')} logged in; session {self.session} at {self.position}")
        await self.call("PUT", f"/api/v1/sessions/{self.session}/presence",
                        {"show": "available"}, expect=(204,))
        self.poller = asyncio.create_task(self._poll_forever())

    async def _poll_forever(self):
        path = f"/api/v1/sessions/{self.session}/events"
        while not self.stopping:
            query = urllib.parse.urlencode({"after": self.position, "timeout": self.POLL_SECONDS})
            status, answer = await asyncio.to_thread(
                self._request, "GET", f"{path}?{query}", None, self.POLL_SECONDS + self.ctx.timeout)
            if self.stopping:
                return
            if status != 200 or not isinstance(answer, dict):
                self.rec.record("poll_error", f"{status} {answer}")
                return
            for event in answer.get("events", []):
                self.rec.record("web_event", event)
            self.position = answer.get("position", self.position)

    def events(self, kind, mark=0):
        return [e for e in self.rec.payloads("web_event", mark) if e.get("type") == kind]

    async def until_event(self, predicate, what, kind, mark=0):
        def seen():
            errors = self.rec.payloads("poll_error")
            return errors or [e for e in self.rec.payloads("web_event", mark)][-12:]
        await self.rec.until(
            lambda: self.rec.payloads("poll_error") or any(predicate(e) for e in self.events(kind, mark)),
            what, seen=seen)
        errors = self.rec.payloads("poll_error")
        check(not errors, f"the long-poll to keep answering 200 while waiting for {what}", errors)

    async def close(self):
        self.stopping = True
        if self.session:
            await self.call("DELETE", f"/api/v1/sessions/{self.session}", expect=(204, 410))
        if self.poller:
            await deadline(self.poller, self.POLL_SECONDS + self.ctx.timeout, "the long-poll to end")


async def scenario_rooms(ctx):
    """A group conversation made on the web is a room for XMPP clients (XEP-0045): listed,
    joined with occupants, history and subject, messages both ways, left."""
    alice = new_client(ctx, ctx.alice, "desk", plugins=("xep_0045",))
    bob_xmpp = new_client(ctx, ctx.bob, "desk")
    for client in (alice, bob_xmpp):
        await start_session(ctx, client)
    await make_contacts(ctx, alice, bob_xmpp)
    await disconnect(ctx, bob_xmpp)
    web = WebClient(ctx, ctx.bob)
    await web.login(ctx.password(ctx.bob))
    group = await web.call("POST", "/api/v1/conversations",
                           {"members": [ctx.alice], "title": "Tea party"}, expect=(200, 201))
    gid = group["id"]
    room = JID(f"{gid}@conference.{ctx.domain}")
    await web.call("POST", f"/api/v1/conversations/{gid}/messages",
                   {"client_id": "before-join", "body": "before you came"}, expect=(200, 201))
    log(f"rooms: bob (web) made the group {gid} with alice and wrote in it")

    items = await alice.plugin["xep_0030"].get_items(jid=f"conference.{ctx.domain}",
                                                     timeout=ctx.timeout)
    listed = [str(item[0]) for item in items["disco_items"]["items"]]
    check(str(room) in listed, f"{room} among alice's rooms", listed)

    me, subject, occupants, history = await deadline(
        alice.plugin["xep_0045"].join_muc_wait(room, "Alice", maxstanzas=20, timeout=ctx.timeout),
        ctx.timeout, f"alice to join {room}")
    check("110" in [str(c) for c in me["muc"]["status_codes"]], "status 110 on the self-presence",
          me["muc"]["status_codes"])
    check(me["from"].resource == ctx.alice, f"the nick {ctx.alice} (nicks are user names)",
          me["from"].resource)
    others = [o["from"].resource for o in occupants if o["from"].resource != ctx.alice]
    check(others == [ctx.bob], f"{ctx.bob} as the other occupant", [str(o["from"]) for o in occupants])
    check([m["body"] for m in history] == ["before you came"], "the message before the join as history",
          [m["body"] for m in history])
    check(subject["subject"] == "Tea party", "the title as the room's subject", subject["subject"])
    log("rooms: alice joined with bob as occupant, the history and the subject")

    mark = alice.rec.mark()
    await web.call("POST", f"/api/v1/conversations/{gid}/messages",
                   {"client_id": "web-1", "body": "tea, anyone?"}, expect=(200, 201))
    await alice.rec.until(
        lambda: any(m["type"] == "groupchat" and m["from"] == JID(f"{room}/{ctx.bob}")
                    and m["body"] == "tea, anyone?" for m in alice.rec.payloads("message", mark)),
        "bob's web message as a groupchat message from the room")
    web_mark = web.rec.mark()
    alice.send_message(mto=room, mbody="yes please", mtype="groupchat")
    await alice.rec.until(
        lambda: any(m["type"] == "groupchat" and m["from"] == JID(f"{room}/{ctx.alice}")
                    and m["body"] == "yes please" for m in alice.rec.payloads("message", mark)),
        "the room to reflect alice's message to her")
    await web.until_event(lambda e: e.get("conversation") == gid and e.get("body") == "yes please",
                          "alice's groupchat message on the web", "message", web_mark)
    log("rooms: messages crossed both ways between the room and the web")
    # slixmpp's room bookkeeping drops the room before the answer comes, so the answer is
    # caught on the wire.
    left = []
    alice.register_handler(Callback("left the room", StanzaPath("presence"), lambda p: (
        left.append(p) if p["from"] == JID(f"{room}/{ctx.alice}") and p["type"] == "unavailable"
        else None, alice.rec.record("left"))))
    alice.plugin["xep_0045"].leave_muc(room, ctx.alice)
    await alice.rec.until(lambda: left, "alice's own unavailable presence from the room")
    log("rooms: alice left the room")
    await web.close()
    await disconnect(ctx, alice)


async def scenario_web(ctx):
    if not ctx.http:
        raise SystemExit("the web scenario needs --http")
    a, b = ctx.bare(ctx.alice), ctx.bare(ctx.bob)
    alice = new_client(ctx, ctx.alice, "desk")
    await start_session(ctx, alice)
    web = WebClient(ctx, ctx.bob)
    await web.login(ctx.password(ctx.bob))

    # Accepting on the web grants both directions; should the server still ask alice over
    # XMPP, she says yes.
    def answer_subscribe(p):
        if p["from"].bare == b and p["type"] == "subscribe":
            alice.send_presence(pto=b, ptype="subscribed")
    alice.add_event_handler("presence_subscribe", answer_subscribe)

    log(f"web: {a} (XMPP) asks {b} (web) for a subscription")
    await deadline(alice.update_roster(b, name=ctx.bob, timeout=ctx.timeout), ctx.timeout,
                   f"alice's roster set for {b}")
    alice_mark, web_mark = alice.rec.mark(), web.rec.mark()
    alice.send_presence(pto=b, ptype="subscribe")
    await web.until_event(lambda e: e.get("peer") == str(a) and e.get("from") == "pending",
                          f"a contact event from {a} with from=pending", "contact", web_mark)
    await web.call("POST", f"/api/v1/contacts/{urllib.parse.quote(str(a))}/accept", expect=(204,))
    log("web: bob saw the request and accepted it over HTTP")
    await wait_presence(alice, b, ("subscribed",), f"a subscribed from {b}", alice_mark)
    await wait_roster_push(alice, b, "both", f"a roster push for {b} with subscription both")
    await wait_presence(alice, b, AVAILABLE, f"{b} available over XMPP", alice_mark)
    await web.until_event(lambda e: e.get("from") == str(a) and e.get("show") == "available",
                          f"a presence event: {a} available", "presence", web_mark)
    contacts = (await web.call("GET", "/api/v1/contacts"))["contacts"]
    entry = [c for c in contacts if c.get("address") == str(a)]
    check(entry and entry[0]["to"] == "accepted" and entry[0]["from"] == "accepted",
          f"bob's web contact list to hold {a} accepted both ways", contacts)
    log("web: each sees the other available")

    to_bob = "from XMPP to the web ✓"
    web_mark = web.rec.mark()
    alice.send_message(mto=b, mbody=to_bob, mtype="chat")
    await web.until_event(lambda e: e.get("from") == str(a) and e.get("body") == to_bob,
                          f"a message event from {a} with body {to_bob!r}", "message", web_mark)
    event = [e for e in web.events("message", web_mark) if e.get("body") == to_bob][0]
    log(f"web: bob got alice's XMPP message in conversation {event.get('conversation')}")

    conversation = await web.call("POST", "/api/v1/conversations", {"with": str(a)})
    check(conversation.get("id") == event.get("conversation"),
          "the direct conversation to be the one alice's message came in",
          f"{conversation.get('id')} vs {event.get('conversation')}")
    to_alice = "from the web to XMPP <&>"
    alice_mark = alice.rec.mark()
    ack = await web.call("POST", f"/api/v1/conversations/{conversation['id']}/messages",
                         {"client_id": str(uuid.uuid4()), "body": to_alice}, expect=(201,))
    await wait_chat(alice, b, [to_alice], f"bob's web message {to_alice!r} over XMPP", alice_mark)
    msg = [m for m in alice.rec.payloads("message", alice_mark) if m["body"] == to_alice][0]
    log(f"web: alice got bob's web message (seq {ack.get('seq')}) from {msg['from']}")
    await web.close()
    await disconnect(ctx, alice)


SCENARIOS = {
    "login": scenario_login,
    "contacts": scenario_contacts,
    "resume": scenario_resume,
    "mam": scenario_mam,
    "carbons": scenario_carbons,
    "web": scenario_web,
    "pep": scenario_pep,
    "unacked": scenario_unacked,
    "shutdown": scenario_shutdown,
    "takeover": scenario_takeover,
    "iq": scenario_iq,
    "direct_tls": scenario_direct_tls,
    "rooms": scenario_rooms,
    "csi": scenario_csi,
    "extras": scenario_extras,
}


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("scenario", choices=sorted(SCENARIOS))
    p.add_argument("--host", required=True)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--domain", required=True)
    p.add_argument("--ca", required=True, help="PEM certificate to trust for the server")
    p.add_argument("--user", action="append", required=True, help="name:password (alice, then bob)")
    p.add_argument("--http", help="base URL of the web line, for the web scenario")
    p.add_argument("--tls-port", type=int, help="the direct TLS port, for the direct_tls scenario")
    p.add_argument("--timeout", type=float, default=20.0, help="deadline of every wait, seconds")
    p.add_argument("--debug", action="store_true", help="slixmpp debug logging (every stanza)")
    return p.parse_args(argv)


async def run(ctx, scenario):
    try:
        await SCENARIOS[scenario](ctx)
    finally:
        for client in ctx.clients:  # leave no connection behind, cleanly or not
            if client.transport is not None:
                client.abort()


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.DEBUG if args.debug else logging.ERROR, stream=sys.stderr,
                        format="%(levelname)s %(name)s: %(message)s")
    ctx = Context(args)
    log(f"scenario {args.scenario}: {ctx.alice} and {ctx.bob} at {ctx.domain} "
        f"via {ctx.host}:{ctx.port}, timeout {ctx.timeout}s")
    try:
        asyncio.run(run(ctx, args.scenario))
    except ScenarioFailure as e:
        log(f"FAIL {args.scenario}: {e}")
        return 1
    except IqError as e:
        error = e.iq["error"]
        log(f"FAIL {args.scenario}: expected an IQ result; saw an error from {e.iq['from']}: "
            f"{error['type']}/{error['condition']} {error['text']!r} in {str(e.iq)[:400]}")
        return 1
    except IqTimeout as e:
        log(f"FAIL {args.scenario}: expected an IQ answer within {ctx.timeout}s; saw none for "
            f"{str(e.iq)[:400]}")
        return 1
    log(f"PASS {args.scenario}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
