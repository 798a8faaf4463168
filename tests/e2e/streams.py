#!/usr/bin/env python3
"""Many concurrent long-lived SSE chat streams through a VIP, one JSON line per stream.

Opens COUNT streams per --group from source address SRC to VIP:PORT, each a fresh TCP
connection sending `POST /v1/chat/completions` with `"stream": true` and `max_tokens` TOKENS,
and follows the Server-Sent Events of tests/tools/model_server.py: one chunk per token carrying
"token_index" 0, 1, ..., then `data: [DONE]` and the end of the chunked body.

Writes JSON lines to stdout:

  {"event": "ready", "established": N, "failed": M, "t": TIME}
      once every stream has received its first token (or failed its first attempt); a caller
      applies its change after this line, so every stream is established before it;
  {"event": "stream", "id": I, "src": SRC, "vip": VIP, "backend": NAME, "outcome": OUTCOME,
   "tokens": N, "expected": N, "in_order": BOOL, "broken": BOOL, "attempts": [...], ...}
      one per stream when it ends. OUTCOME is that of its last attempt: "done" (every token in
      order, then [DONE] and the end of the body), "reset" (connection reset), "eof" (closed
      before [DONE]), "stalled" (no byte for --stall seconds), "connect_failed", "http_error"
      (not a 200 event stream) or "bad_data" (a token out of order or unparseable). "broken"
      is true for the first attempt's failure: the stream as the client first opened it did not
      complete. Each attempt has backend, outcome, tokens, in_order, sport (the source port),
      t_start, t_first, t_last, t_end (wall-clock seconds), max_gap (the longest pause between
      two tokens, seconds, as read: tokens that arrive in one read count as one) and error;
  {"event": "end", "streams": N, "done": N, "broken": N, "t": TIME}

With --retry-for SECS, a stream whose attempt fails opens a new connection (after 0.3 s) until
one completes or SECS have passed since the stream started: "a client that reconnects".

usage: streams.py --group SRC,VIP:PORT,COUNT [--group ...] [--tokens 100] [--stall 8]
                  [--connect-timeout 3] [--retry-for 0] [--ramp 1.0] [--ready-timeout 20]
"""
import argparse
import asyncio
import json
import sys
import time


class Attempt:
    def __init__(self, sport=None):
        self.backend = None
        self.outcome = None
        self.error = None
        self.tokens = 0
        self.in_order = True
        self.sport = sport
        self.t_start = time.time()
        self.t_first = None
        self.t_last = None
        self.t_end = None
        self.max_gap = 0.0

    def as_dict(self):
        return {k: getattr(self, k) for k in ("backend", "outcome", "error", "tokens", "in_order",
                                              "sport", "t_start", "t_first", "t_last", "t_end",
                                              "max_gap")}


class Stall(Exception):
    pass


async def read(coro, stall):
    try:
        return await asyncio.wait_for(coro, stall)
    except asyncio.TimeoutError:
        raise Stall() from None


async def one_attempt(args, src, vip, port, first_token):
    """Runs one connection; calls first_token() once the first token arrived."""
    a = Attempt()
    body = json.dumps({"model": "e2e", "stream": True, "max_tokens": args.tokens,
                       "messages": [{"role": "user", "content": "stream please"}]}).encode()
    writer = None
    try:
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(vip, port, local_addr=(src, 0)), args.connect_timeout)
        except (OSError, asyncio.TimeoutError) as e:
            a.outcome, a.error = "connect_failed", repr(e)
            return a
        a.sport = writer.get_extra_info("sockname")[1]
        writer.write(b"POST /v1/chat/completions HTTP/1.1\r\nHost: %s:%d\r\n"
                     b"Content-Type: application/json\r\nAccept: text/event-stream\r\n"
                     b"Content-Length: %d\r\n\r\n%s" % (vip.encode(), port, len(body), body))
        await writer.drain()
        status = await read(reader.readline(), args.stall)
        if not status:
            a.outcome, a.error = "eof", "no status line"
            return a
        headers = {}
        while True:
            line = await read(reader.readline(), args.stall)
            if not line:
                a.outcome, a.error = "eof", "in headers"
                return a
            if line in (b"\r\n", b"\n"):
                break
            k, _, v = line.decode("latin-1").partition(":")
            headers[k.strip().lower()] = v.strip()
        a.backend = headers.get("x-backend")
        parts = status.split()
        if len(parts) < 2 or parts[1] != b"200" or \
                "text/event-stream" not in headers.get("content-type", "") or \
                "chunked" not in headers.get("transfer-encoding", "").lower():
            a.outcome, a.error = "http_error", status.decode("latin-1").strip()
            return a
        # The body: read whatever arrived (several tokens per read at a few ms per token), then
        # take the chunked framing and the SSE events apart from the buffer.
        raw = b""
        events = b""
        done_marker = False
        body_end = False
        while not body_end:
            data = await read(reader.read(65536), args.stall)
            if not data:
                a.outcome, a.error = "eof", "before the end of the body"
                return a
            raw += data
            while True:
                eol = raw.find(b"\r\n")
                if eol < 0:
                    break
                size = int(raw[:eol].split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    body_end = True   # the last chunk; its trailer line may still be in flight
                    break
                if len(raw) < eol + 2 + size + 2:
                    break
                events += raw[eol + 2:eol + 2 + size]
                raw = raw[eol + 2 + size + 2:]
            now = time.time()
            while b"\n\n" in events:
                event, events = events.split(b"\n\n", 1)
                for line in event.split(b"\n"):
                    if not line.startswith(b"data: "):
                        continue
                    payload = line[6:]
                    if payload == b"[DONE]":
                        done_marker = True
                        continue
                    obj = json.loads(payload)
                    if "token_index" in obj:
                        if obj["token_index"] != a.tokens:
                            a.in_order = False
                        a.tokens += 1
                        if a.t_last is not None:
                            a.max_gap = max(a.max_gap, now - a.t_last)
                        a.t_last = now
                        if a.t_first is None:
                            a.t_first = now
                            first_token()
        if not done_marker:
            a.outcome, a.error = "eof", "body ended without [DONE]"
        elif not a.in_order or a.tokens != args.tokens:
            a.outcome, a.error = "bad_data", f"{a.tokens} tokens, in order {a.in_order}"
        else:
            a.outcome = "done"
        return a
    except Stall:
        a.outcome, a.error = "stalled", f"no data for {args.stall} s"
        return a
    except asyncio.IncompleteReadError as e:
        a.outcome, a.error = "eof", repr(e)
        return a
    except (ConnectionResetError, BrokenPipeError) as e:
        a.outcome, a.error = "reset", repr(e)
        return a
    except OSError as e:
        a.outcome, a.error = "reset", repr(e)
        return a
    except (ValueError, KeyError) as e:
        a.outcome, a.error = "bad_data", repr(e)
        return a
    finally:
        a.t_end = time.time()
        if writer is not None:
            writer.close()


async def one_stream(args, sid, src, vip, port, delay, ready):
    await asyncio.sleep(delay)
    start = time.time()
    attempts = []
    signalled = False

    def first_token():
        nonlocal signalled
        if not signalled:
            signalled = True
            ready(True)

    while True:
        a = await one_attempt(args, src, vip, port, first_token)
        attempts.append(a)
        if not signalled:
            signalled = True
            ready(a.outcome == "done" or a.tokens > 0)
        if a.outcome == "done" or args.retry_for <= 0 or time.time() - start >= args.retry_for:
            break
        await asyncio.sleep(0.3)
    last, first = attempts[-1], attempts[0]
    first_ok = first.outcome == "done"
    return {
        "event": "stream", "id": sid, "src": src, "vip": vip, "port": port,
        "backend": last.backend, "first_backend": first.backend, "outcome": last.outcome,
        "tokens": last.tokens, "expected": args.tokens, "in_order": last.in_order,
        "max_gap": first.max_gap,
        "broken": not first_ok, "completed": last.outcome == "done",
        "attempts": [x.as_dict() for x in attempts],
    }


async def main_async(args):
    specs = []
    for g in args.group:
        try:
            src, target, count = g.split(",")
            vip, port = target.rsplit(":", 1)
            specs += [(src, vip, int(port))] * int(count)
        except ValueError:
            sys.exit(f"streams.py: bad --group {g!r}: expected SRC,VIP:PORT,COUNT")
    # Interleave the groups so every source opens its streams across the ramp.
    order = sorted(range(len(specs)), key=lambda i: (i % max(1, len(args.group)), i))
    counts = {"established": 0, "failed": 0}
    all_in = asyncio.Event()

    def ready(ok):
        counts["established" if ok else "failed"] += 1
        if counts["established"] + counts["failed"] == len(specs):
            all_in.set()

    def emit(obj):
        sys.stdout.write(json.dumps(obj) + "\n")
        sys.stdout.flush()

    tasks = []
    n = len(specs)
    for k, i in enumerate(order):
        src, vip, port = specs[i]
        delay = args.ramp * k / max(1, n)
        tasks.append(asyncio.ensure_future(one_stream(args, i, src, vip, port, delay, ready)))

    async def announce():
        try:
            await asyncio.wait_for(all_in.wait(), args.ready_timeout)
        except asyncio.TimeoutError:
            pass
        emit({"event": "ready", "t": time.time(), **counts, "streams": n})

    ann = asyncio.ensure_future(announce())
    results = []
    for fut in asyncio.as_completed(tasks):
        r = await fut
        results.append(r)
        emit(r)
    await ann
    emit({"event": "end", "t": time.time(), "streams": n,
          "done": sum(r["outcome"] == "done" for r in results),
          "broken": sum(r["broken"] for r in results)})


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--group", action="append", required=True, metavar="SRC,VIP:PORT,COUNT")
    p.add_argument("--tokens", type=int, default=100)
    p.add_argument("--stall", type=float, default=8.0)
    p.add_argument("--connect-timeout", type=float, default=3.0)
    p.add_argument("--retry-for", type=float, default=0.0)
    p.add_argument("--ramp", type=float, default=1.0)
    p.add_argument("--ready-timeout", type=float, default=20.0)
    args = p.parse_args()
    try:
        asyncio.run(main_async(args))
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
