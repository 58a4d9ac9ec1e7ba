#!/usr/bin/env python3
"""A minimal Warden report agent: a starting point for your own.

Connects to Warden's control socket, says hello (protocol version), subscribes to the report
stream after the last sequence number it saw (kept in a state file with the daemon run's
epoch, so a restarted agent resumes where it stopped and misses nothing that Warden still
holds), and prints every connection record, event and loss as one JSON line on stdout:

    {"seq": 12, "record": {...}}          one per connection record of a report batch
    {"seq": 12, "batch_records": 3}       after each batch (also empty ones: the interval passed)
    {"seq": 13, "event": {...}}           threat, violation, denied, exception
    {"lost": {"from_seq": 3, ...}}        messages Warden dropped before this agent read them

Replace handle_record / handle_event / handle_lost with what your agent does (ship to a
collector, ...). Only the Python standard library is used.

Usage: agent.py [--socket /run/warden/warden.sock] [--state agent.state] [--seconds N]
"""

import argparse
import json
import os
import socket
import sys
import time

PROTOCOL_VERSION = "1.3"  # control/src/types.rs PROTOCOL_VERSION


class ProtocolError(Exception):
    pass


class Warden:
    """One connection to the control socket: newline-delimited JSON, one request, one reply."""

    def __init__(self, path, timeout=None):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        self.sock.connect(path)
        self.file = self.sock.makefile("rb")

    def send(self, request):
        self.sock.sendall(json.dumps(request).encode() + b"\n")

    def read(self):
        line = self.file.readline()
        if not line:
            raise EOFError("warden closed the connection")
        msg = json.loads(line)
        if not msg.get("ok"):
            raise ProtocolError(msg.get("error", "unknown error"))
        return msg

    def request(self, request):
        self.send(request)
        return self.read()

    def hello(self):
        """Exchanges protocol versions; refuses a daemon of another major version."""
        reply = self.request({"cmd": "hello", "version": PROTOCOL_VERSION, "client": "agent.py"})
        theirs = reply["hello"]["version"]
        if theirs.split(".")[0] != PROTOCOL_VERSION.split(".")[0]:
            raise ProtocolError(f"warden speaks protocol {theirs}, this agent {PROTOCOL_VERSION}")
        return reply["hello"]

    def subscribe(self, since=None, epoch=None):
        req = {"cmd": "subscribe"}
        if since is not None:
            req["since"] = since
        if epoch is not None:
            req["epoch"] = epoch
        return self.request(req)["subscribed"]


def load_state(path):
    """(epoch, last seq seen) or (None, None)."""
    try:
        with open(path) as f:
            s = json.load(f)
        return s["epoch"], s["seq"]
    except (OSError, ValueError, KeyError):
        return None, None


def save_state(path, epoch, seq):
    # Written whole then renamed: a crash never leaves half a state file.
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump({"epoch": epoch, "seq": seq}, f)
    os.replace(tmp, path)


def emit(obj):
    print(json.dumps(obj), flush=True)


def handle_record(seq, record):
    emit({"seq": seq, "record": record})


def handle_event(seq, event):
    emit({"seq": seq, "event": event})


def handle_lost(lost):
    # Warden dropped these before we read them (we were away, or too slow): count them.
    emit({"lost": lost})
    print(
        f"agent: lost {lost['records']} records and {lost['events']} events "
        f"(seq {lost['from_seq']}..{lost['to_seq']}, {lost['reason']})",
        file=sys.stderr,
    )


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--socket", default="/run/warden/warden.sock")
    ap.add_argument("--state", default="agent.state", help="file keeping the last seq seen")
    ap.add_argument("--seconds", type=float, default=None, help="stop after this long")
    args = ap.parse_args()

    # No read timeout: Warden sends a batch every report interval even when it is empty, so
    # the loop wakes at least that often.
    w = Warden(args.socket)
    hello = w.hello()
    epoch, seq = load_state(args.state)
    # First run: everything Warden still holds (since 0). Later: after the last seq seen.
    sub = w.subscribe(since=seq if seq is not None else 0, epoch=epoch)
    epoch = sub["epoch"]
    print(f"agent: {hello['server']} protocol {hello['version']}, from seq {sub['first_seq']}",
          file=sys.stderr)

    deadline = time.monotonic() + args.seconds if args.seconds is not None else None
    while deadline is None or time.monotonic() < deadline:
        try:
            msg = w.read()
        except EOFError:
            break
        if "report" in msg:
            batch = msg["report"]
            for record in batch["connections"]:
                handle_record(batch["seq"], record)
            emit({"seq": batch["seq"], "batch_records": len(batch["connections"])})
            seq = batch["seq"]
        elif "event" in msg:
            ev = msg["event"]
            handle_event(ev["seq"], ev)
            seq = ev["seq"]
        elif "lost" in msg:
            handle_lost(msg["lost"])
            seq = max(seq or 0, msg["lost"]["to_seq"])
        else:
            continue
        # Saved after the message was handled: a crash re-delivers it rather than losing it.
        save_state(args.state, epoch, seq)
    return 0


if __name__ == "__main__":
    sys.exit(main())
