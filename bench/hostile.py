#!/usr/bin/env python3
"""Hostile probes: the attacks that found the holes of the hardening issue,
run from outside against the release `spike serve`, each against a fresh
server. The long forms of the end-to-end regression tests; figures go to
docs/RELIABILITY.md.

    bench/hostile.py                 # every probe (about 3 minutes)
    bench/hostile.py slowloris unread   # some of them

Needs the release host and the guests: `cargo build --release -p spike` and
`scripts/build-guests.sh` (bench/hostile.sh does both, then runs this).
Loopback only; every probe is bounded in connections and time.
"""

import asyncio
import json
import logging
import os
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import time

TARGET = os.environ.get("CARGO_TARGET_DIR", os.path.expanduser("~/.cache/spike-target"))
SPIKE = os.path.join(TARGET, "release", "spike")
GUESTS = os.path.join(TARGET, "wasm32-wasip2", "guest")
TOKEN = "probe-token"

HELLO = ("hello", "hello", '[[routes]]\nprefix = "/hello"\n[grants]\nkv = ["hello"]\nblob = ["hello-files"]\n[env]\nWRITE_ACCESS = "anyone"\n')
PLAIN = ("plain", "fixture_plain_hello", '[[routes]]\nprefix = "/plain"\n')


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """A `spike serve` in a scratch folder, with these plugins and flags."""

    def __init__(self, plugins, flags=(), nofile=None, manifests_extra=(), admin=True):
        self.dir = tempfile.mkdtemp(prefix="spike-probe-")
        self.plugins = os.path.join(self.dir, "plugins")
        os.makedirs(self.plugins)
        for name, guest, manifest in plugins:
            with open(os.path.join(self.plugins, name + ".toml"), "w") as f:
                if guest is None:  # rooms only: no component
                    f.write(manifest)
                    continue
                shutil.copy(os.path.join(GUESTS, guest + ".wasm"), os.path.join(self.plugins, name + ".wasm"))
                f.write(f'component = "{name}.wasm"\n{manifest}')
        for name, text in manifests_extra:
            with open(os.path.join(self.plugins, name + ".toml"), "w") as f:
                f.write(text)
        self.port = free_port()
        self.log = open(os.path.join(self.dir, "spike.log"), "w")

        def limit_files():
            if nofile:
                resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))

        env = dict(os.environ, RUST_LOG="warn")
        self.proc = subprocess.Popen(
            [SPIKE, "serve", "--listen", f"127.0.0.1:{self.port}", "--plugins", self.plugins,
             "--data", os.path.join(self.dir, "data"), *(["--admin-token", TOKEN] if admin else []), *flags],
            stdout=self.log, stderr=subprocess.STDOUT, env=env, preexec_fn=limit_files)
        deadline = time.time() + 30
        while time.time() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                    # Ready, or done loading with some plugin failed (a probe
                    # may start one that does not load on purpose).
                    s.sendall(b"GET /readyz HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
                    reply = s.recv(4096)
                    if reply.startswith(b"HTTP/1.1 200") or b'"status":"failed"' in reply:
                        return
                    time.sleep(0.05)
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"spike did not start; see {self.log.name}")

    def rss_mib(self):
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
        return 0.0

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, *_):
        self.stop()


async def request(port, raw, timeout=10.0, body_limit=None):
    """Sends raw bytes, reads one response: (status, headers, body)."""
    reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), timeout)
    try:
        writer.write(raw)
        await writer.drain()
        return await asyncio.wait_for(read_response(reader, body_limit), timeout)
    finally:
        writer.close()


async def read_response(reader, body_limit=None):
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ")[1])
    headers = {}
    for line in lines[1:]:
        if ":" in line:
            k, v = line.split(":", 1)
            headers[k.strip().lower()] = v.strip()
    length = int(headers.get("content-length", "0"))
    if body_limit is not None:
        length = min(length, body_limit)
    body = await reader.readexactly(length) if length else b""
    return status, headers, body


def get(path, extra=""):
    return f"GET {path} HTTP/1.1\r\nhost: spike\r\nconnection: close\r\n{extra}\r\n".encode()


def put(path, body, extra=""):
    return f"PUT {path} HTTP/1.1\r\nhost: spike\r\nconnection: close\r\ncontent-length: {len(body)}\r\n{extra}\r\n".encode() + body


async def sample_rss(server, stop, peak):
    while not stop.is_set():
        peak[0] = max(peak[0], server.rss_mib())
        await asyncio.sleep(0.02)


def pct(values, p):
    values = sorted(values)
    return values[min(len(values) - 1, int(len(values) * p / 100))] if values else float("nan")


async def probe_uploads():
    """8 anonymous 250 MiB admin uploads at once: the token is checked first."""
    for admin, label in ((True, "admin API on"), (False, "admin API off")):
        with Server([HELLO], admin=admin) as s:
            base = s.rss_mib()
            stop, peak = asyncio.Event(), [base]
            sampler = asyncio.create_task(sample_rss(s, stop, peak))

            async def upload():
                reader, writer = await asyncio.open_connection("127.0.0.1", s.port)
                writer.write(f"PUT /_spike/plugins/hello HTTP/1.1\r\nhost: x\r\ncontent-length: {250 << 20}\r\n\r\n".encode())
                chunk, sent, status = b"\0" * (1 << 20), 0, None
                read = asyncio.create_task(read_response(reader))
                # Send the whole body whatever the server answers, until it
                # hangs up.
                try:
                    while sent < 250 << 20:
                        writer.write(chunk)
                        await asyncio.wait_for(writer.drain(), 5)
                        sent += len(chunk)
                except (OSError, asyncio.TimeoutError):
                    pass
                try:
                    status = (await asyncio.wait_for(read, 5))[0]
                except Exception:
                    status = "closed"
                writer.close()
                return sent >> 20, status

            results = await asyncio.gather(*(upload() for _ in range(8)))
            stop.set()
            await sampler
            print(f"uploads ({label}): 8 x 250 MiB anonymous; statuses {sorted({r[1] for r in results}, key=str)}; "
                  f"MiB sent before the server hung up: {[r[0] for r in results]}; "
                  f"server RSS {base:.0f} -> peak {peak[0]:.0f} MiB (+{peak[0] - base:.1f})")


async def probe_trickle():
    """1000 uploads trickling a byte every 2 s into one plugin, another plugin probed meanwhile."""
    with Server([HELLO, PLAIN]) as s:
        conns = []
        for i in range(1000):
            _, w = await asyncio.open_connection("127.0.0.1", s.port)
            w.write(f"PUT /hello/files/t{i} HTTP/1.1\r\nhost: x\r\ncontent-length: 100000\r\n\r\n".encode())
            conns.append(w)
        stop = asyncio.Event()

        async def trickle():
            while not stop.is_set():
                for w in conns:
                    try:
                        w.write(b"x")
                    except Exception:
                        pass
                await asyncio.sleep(2)

        t = asyncio.create_task(trickle())
        await asyncio.sleep(1)
        status, _, body = await request(s.port, get("/_spike/plugins", f"authorization: Bearer {TOKEN}\r\n"))
        hello = next(p for p in json.loads(body)["plugins"] if p["name"] == "hello")
        hello_status = (await request(s.port, get("/hello")))[0]
        codes, lat = {}, []
        end = time.time() + 20
        while time.time() < end:
            t0 = time.perf_counter()
            code = (await request(s.port, get("/plain")))[0]
            lat.append((time.perf_counter() - t0) * 1e3)
            codes[code] = codes.get(code, 0) + 1
        stop.set()
        await t
        for w in conns:
            w.close()
        print(f"trickle: 1000 uploads to hello at 1 byte / 2 s; hello in flight {hello['in_flight']}/{hello['max_concurrent']}, "
              f"a new hello request -> {hello_status}; /plain for 20 s: {codes} (p50 {pct(lat, 50):.2f} ms, p99 {pct(lat, 99):.2f} ms)")

    with Server([HELLO]) as s:
        reader, writer = await asyncio.open_connection("127.0.0.1", s.port)
        writer.write(b"PUT /hello/files/stall HTTP/1.1\r\nhost: x\r\ncontent-length: 100\r\n\r\n0123456789")
        t0 = time.time()
        status = (await asyncio.wait_for(read_response(reader), 30))[0]
        writer.close()
        print(f"stall: a body that stops after 10 of 100 bytes -> {status} after {time.time() - t0:.1f} s")


async def probe_unread():
    """4 downloads that never read, --max-instances 4: their instances come back."""
    big_hello = ("hello", "hello", HELLO[2] + "[limits]\nmax_body_mib = 128\n")
    with Server([big_hello, PLAIN], ("--max-instances", "4")) as s:
        # hello's default share of a 4-instance pool is 2.
        big = os.urandom(1 << 20) * 64
        reader, writer = await asyncio.open_connection("127.0.0.1", s.port)
        writer.write(put("/hello/files/big", big))
        await writer.drain()
        assert (await read_response(reader))[0] == 201
        writer.close()
        idle = []
        for _ in range(4):
            _, w = await asyncio.open_connection("127.0.0.1", s.port)
            w.write(get("/hello/files/big").replace(b"connection: close\r\n", b""))
            idle.append(w)
        await asyncio.sleep(0.5)
        t0 = time.time()
        first = (await request(s.port, get("/hello")))[0]
        plain = (await request(s.port, get("/plain")))[0]
        while (await request(s.port, get("/hello")))[0] != 200:
            await asyncio.sleep(0.5)
        back = time.time() - t0
        for w in idle:
            w.close()
        print(f"unread: 4 downloads of 64 MiB never read; hello at once -> {first}, /plain -> {plain}; "
              f"hello served again after {back:.1f} s (send timeout 30 s)")


async def probe_slowloris():
    """500 connections sending their request head a byte a second for 50 s."""
    with Server([PLAIN]) as s:
        head = b"GET /plain HTTP/1.1\r\nhost: x\r\n" + b"x-pad: " + b"a" * 60 + b"\r\n\r\n"

        async def slow():
            reader, writer = await asyncio.open_connection("127.0.0.1", s.port)
            t0 = time.time()
            for b in head[:50]:
                try:
                    writer.write(bytes([b]))
                    await writer.drain()
                except OSError:
                    break
                try:
                    data = await asyncio.wait_for(reader.read(1024), 1.0)
                    if not data:
                        break
                except asyncio.TimeoutError:
                    pass
            else:
                return None
            writer.close()
            return time.time() - t0

        tasks = [asyncio.create_task(slow()) for _ in range(500)]
        await asyncio.sleep(2)
        served = [(await request(s.port, get("/plain")))[0] for _ in range(20)]
        closed = [t for t in await asyncio.gather(*tasks) if t is not None]
        print(f"slowloris: 500 connections, a header byte per second for up to 50 s; {len(closed)} closed by the server "
              f"after {min(closed):.1f} to {max(closed):.1f} s (header timeout 10 s); 20 normal requests meanwhile: "
              f"{sorted(set(served))}")


async def probe_flood():
    """A low open-file limit and a flood of idle connections."""
    with Server([PLAIN], nofile=512) as s:
        conns = []
        for _ in range(600):
            try:
                r, w = await asyncio.open_connection("127.0.0.1", s.port)
                conns.append((r, w))
            except OSError:
                break
        await asyncio.sleep(0.5)
        refused = 0
        for r, _ in conns:
            try:
                data = await asyncio.wait_for(r.read(200), 0.01)
                refused += b"too_many_connections" in data
            except asyncio.TimeoutError:
                pass
        status, _, body = await request(s.port, get("/plain"))
        t0 = time.time()
        while (await request(s.port, get("/plain")))[0] != 200:
            await asyncio.sleep(0.2)
        back = time.time() - t0
        for _, w in conns:
            w.close()
        print(f"flood: open-file limit 512 (cap lowered to 128), 600 idle connections: {refused} refused at once "
              f"with 503 too_many_connections; a normal request then -> {status}, served again after {back:.1f} s "
              f"(the idle ones time out)")


async def probe_membomb():
    """16 memory bombs at once, 128 MiB each, under a 512 MiB budget."""
    bomb = ("bomb", "fixture_membomb", '[[routes]]\nprefix = "/bomb"\n[limits]\nmemory_mib = 128\n')
    with Server([bomb, PLAIN], ("--memory-budget-mib", "512")) as s:
        base = s.rss_mib()
        stop, peak = asyncio.Event(), [base]
        sampler = asyncio.create_task(sample_rss(s, stop, peak))
        codes = {}
        for _ in range(3):
            results = await asyncio.gather(*(request(s.port, get("/bomb"), 30) for _ in range(16)))
            for status, _, body in results:
                key = f"{status} {json.loads(body)['error']['code']}"
                codes[key] = codes.get(key, 0) + 1
        plain = (await request(s.port, get("/plain")))[0]
        stop.set()
        await sampler
        print(f"membomb: 3 rounds of 16 concurrent 128 MiB bombs, budget 512 MiB: {codes}; "
              f"server RSS {base:.0f} -> peak {peak[0]:.0f} MiB; alive, /plain -> {plain}")


async def probe_overwrite():
    """Two writers overwrite one key while a reader reads it, 10 s."""
    with Server([HELLO]) as s:
        a, b = b"a" * 65536, b"b" * 32768
        await request(s.port, put("/hello/files/k", a))
        end = time.time() + 10
        writes, reads, missing, torn = 0, 0, 0, 0

        async def writer(body):
            nonlocal writes
            while time.time() < end:
                assert (await request(s.port, put("/hello/files/k", body)))[0] == 201
                writes += 1

        async def reader():
            nonlocal reads, missing, torn
            while time.time() < end:
                status, _, body = await request(s.port, get("/hello/files/k"))
                reads += 1
                missing += status == 404
                torn += status == 200 and body not in (a, b)

        await asyncio.gather(writer(a), writer(b), reader())
        print(f"overwrite: {reads} reads during {writes} overwrites: {missing} not found, {torn} neither object")


async def probe_ports():
    """A granted name that resolves to loopback, on a port outside the grant."""
    upstream = socket.socket()
    upstream.bind(("127.0.0.1", 0))
    upstream.listen(16)
    port = upstream.getsockname()[1]
    neighbour = socket.socket()
    try:
        neighbour.bind(("127.0.0.1", port + 1))
        neighbour.listen(16)
    except OSError:
        print("ports: skipped (neighbouring port taken)")
        return
    hits = {"granted": 0, "neighbour": 0}

    async def serve(sock, name):
        loop = asyncio.get_running_loop()
        sock.setblocking(False)
        while True:
            conn, _ = await loop.sock_accept(sock)
            hits[name] += 1
            await loop.sock_recv(conn, 4096)
            await loop.sock_sendall(conn, b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok")
            conn.close()

    servers = [asyncio.create_task(serve(upstream, "granted")), asyncio.create_task(serve(neighbour, "neighbour"))]
    fetch = ("fetch", "fixture_fetch",
             f'[[routes]]\nprefix = "/fetch"\n[grants]\noutbound = ["127.0.0.1:{port}", "localhost"]\n')
    with Server([fetch]) as s:
        ok = await request(s.port, get(f"/fetch?authority=localhost:{port}"))
        bad = await request(s.port, get(f"/fetch?authority=localhost:{port + 1}"))
        print(f"ports: grant 127.0.0.1:{port} + localhost; localhost:{port} -> {ok[0]}, "
              f"localhost:{port + 1} -> {bad[0]} {json.loads(bad[2])['error']['message']!r}; upstream hits {hits}")
    for t in servers:
        t.cancel()
    upstream.close()
    neighbour.close()


async def probe_errors():
    """Errors that say the right thing and nothing more; HTTP semantics."""
    leak = ("leak", 'component = "/etc/passwd"\n[[routes]]\nprefix = "/leak"\n')
    with Server([HELLO], ("--max-object-mib", "1"), manifests_extra=[leak]) as s:
        out = []
        st, _, body = await request(s.port, b"GET /hello HTTP/1.1\r\nhost: \xff\xfe\r\nconnection: close\r\n\r\n")
        out.append(f"non-UTF-8 Host -> {st} {json.loads(body)['error']['code']}")
        st, _, body = await request(s.port, put("/hello/files/big", b"x" * ((1 << 20) + 1)))
        out.append(f"object over --max-object-mib -> {st} {json.loads(body)['error']['message']!r}")
        st, _, body = await request(s.port, get("/leak"))
        out.append(f"unavailable plugin -> {st} {body.decode()!r}")
        st, _, body = await request(s.port, get("/hello", "expect: teapot\r\n"))
        out.append(f"Expect: teapot -> {st}")
        await request(s.port, put("/hello/files/r", b"0123456789"))
        await request(s.port, put("/hello/files/empty", b""))
        st, h, body = await request(s.port, b"HEAD /hello/files/r HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n", body_limit=0)
        out.append(f"HEAD -> {st} content-length {h.get('content-length')}")
        st, h, body = await request(s.port, get("/hello/files/r", "range: bytes=0-18446744073709551615\r\n"))
        out.append(f"bytes=0-18446744073709551615 -> {st} {h.get('content-range')} {len(body)} bytes")
        st, h, _ = await request(s.port, get("/hello/files/empty", "range: bytes=0-\r\n"))
        out.append(f"range on an empty object -> {st} {h.get('content-range')}")
        os.remove(os.path.join(s.plugins, "hello.wasm"))
        await asyncio.sleep(1)
        _, _, body = await request(s.port, get("/_spike/plugins", f"authorization: Bearer {TOKEN}\r\n"))
        hello = next(p for p in json.loads(body)["plugins"] if p["name"] == "hello")
        out.append(f"component file deleted -> {hello['state']}: {hello['error']!r}; /hello -> {(await request(s.port, get('/hello')))[0]}")
        print("errors:\n  " + "\n  ".join(out))


# The probes of the second hostile pass (issue 33): rooms that amplify,
# memory outside the budget, the transpiler's limits.

YJS = ("yjs", None, '[[rooms]]\nprefix = "/yjs"\nprotocol = "yjs"\n')
TEXT = ("text", None, '[[rooms]]\nprefix = "/room"\nprotocol = "text"\nmax_message_kib = 16384\n')
TRANSPILE = ("transpile", "transpile", '[[routes]]\nprefix = "/transpile"\n[limits]\ncpu_ms = 10000\ntimeout_ms = 15000\nmemory_mib = 512\nmax_body_mib = 6\n')
RENDER = ("render", "render", '[[routes]]\nprefix = "/render"\n[grants]\nrender = true\n')


def var(n):
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


async def ws_open(port, path):
    """A WebSocket opened by hand: the 101 read, nothing else."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET {path} HTTP/1.1\r\nhost: x\r\nconnection: Upgrade\r\nupgrade: websocket\r\n"
                 "sec-websocket-version: 13\r\nsec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n".encode())
    await writer.drain()
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    assert head.startswith(b"HTTP/1.1 101"), head[:100]
    return reader, writer


def ws_frame(payload, opcode=2):
    """A masked client frame (the mask all zero: the payload as it is)."""
    n = len(payload)
    head = bytes([0x80 | opcode])
    if n < 126:
        head += bytes([0x80 | n])
    elif n < 65536:
        head += bytes([0x80 | 126]) + n.to_bytes(2, "big")
    else:
        head += bytes([0x80 | 127]) + n.to_bytes(8, "big")
    return head + b"\0\0\0\0" + payload


def yjs_update(text):
    """y-protocols' sync update inserting `text` at the start of the text "text"."""
    t = text.encode()
    update = var(1) + var(1) + var(1) + var(0) + b"\x04" + var(4) + b"text" + var(len(t)) + t + var(0)
    return b"\x00\x02" + var(len(update)) + update


def awareness(client, json):
    j = json.encode()
    update = var(1) + var(client) + var(1) + var(len(j)) + j
    return b"\x01" + var(len(update)) + update


async def hello_latency(port, stop, worst):
    while not stop.is_set():
        t0 = time.time()
        await request(port, get("/hello"))
        worst[0] = max(worst[0], (time.time() - t0) * 1000)
        await asyncio.sleep(0.02)


async def probe_yjs_amplify():
    """One 2,400-byte frame of 600 sync step 1s (and one of 1,000 awareness
    queries against 1 MiB of states) from each of 20 clients that never read,
    against a 1 MiB document; /hello timed meanwhile."""
    with Server([YJS, HELLO]) as s:
        _, w = await ws_open(s.port, "/yjs/big")
        w.write(ws_frame(yjs_update("x" * (1 << 20))))
        for client in range(3):
            w.write(ws_frame(awareness(10 + client, '{"pad":"%s"}' % ("s" * (300 << 10)))))
        await w.drain()
        await asyncio.sleep(1)
        base = s.rss_mib()
        stop, peak, worst = asyncio.Event(), [base], [0.0]
        tasks = [asyncio.create_task(sample_rss(s, stop, peak)),
                 asyncio.create_task(hello_latency(s.port, stop, worst))]
        deaf, closed = [], 0
        for i in range(20):
            r, dw = await ws_open(s.port, "/yjs/big")
            dw.write(ws_frame(b"\x00\x00\x01\x00" * 600 if i % 2 == 0 else b"\x03" * 1000))
            await dw.drain()
            deaf.append((r, dw))
        await asyncio.sleep(3)
        stop.set()
        await asyncio.gather(*tasks)
        for _, dw in deaf:
            dw.close()
        w.close()
        print(f"yjs_amplify: 20 clients, each one frame of 600 sync step 1s or 1,000 awareness queries "
              f"against a 1 MiB document and 1 MiB of states, reading nothing: server RSS {base:.0f} -> "
              f"peak {peak[0]:.0f} MiB (+{peak[0] - base:.0f}); /hello worst {worst[0]:.0f} ms")


async def probe_text_welcome():
    """60 joiners that never read, of an 8 M-character text room."""
    with Server([TEXT]) as s:
        _, w = await ws_open(s.port, "/room/long")
        edit = json.dumps({"type": "insert", "position": 0, "content": "0123456789" * 800_000, "seq": 0})
        w.write(ws_frame(edit.encode(), opcode=1))
        await w.drain()
        await asyncio.sleep(3)
        base = s.rss_mib()
        stop, peak = asyncio.Event(), [base]
        sampler = asyncio.create_task(sample_rss(s, stop, peak))
        deaf = [await ws_open(s.port, "/room/long") for _ in range(60)]
        await asyncio.sleep(5)
        for _, dw in deaf:
            dw.close()
        await asyncio.sleep(5)
        stop.set()
        await sampler
        after = s.rss_mib()
        w.close()
        print(f"text_welcome: 60 joiners of an 8 M-character room reading nothing: server RSS {base:.0f} -> "
              f"peak {peak[0]:.0f} MiB (+{peak[0] - base:.0f}); {after:.0f} MiB 5 s after they closed")


async def probe_stacks():
    """80 requests at once that run their wasm stack to its end, under a 1 GiB budget."""
    panic = ("panic", "fixture_panic", '[[routes]]\nprefix = "/panic"\n')
    with Server([panic], flags=["--memory-budget-mib", "1024"]) as s:
        await request(s.port, get("/panic?deep"), timeout=30)
        base = s.rss_mib()
        stop, peak = asyncio.Event(), [base]
        sampler = asyncio.create_task(sample_rss(s, stop, peak))
        statuses = await asyncio.gather(*(request(s.port, get("/panic?deep"), timeout=60) for _ in range(80)))
        stop.set()
        await sampler
        await asyncio.sleep(1)
        print(f"stacks: 80 stack overflows at once: statuses {sorted({st for st, _, _ in statuses})}; server RSS "
              f"{base:.0f} -> peak {peak[0]:.0f} MiB, {s.rss_mib():.0f} MiB with no instance alive")


async def probe_transpile():
    """Sources deeper than the stack, past the scan's old blind spots, and a long constant."""
    with Server([TRANSPILE]) as s:
        cases = [
            ("a division of 6,000 brackets", "export const x = {} / " + "(" * 6000 + "1" + ")" * 6000 + " / 1;"),
            ("10,000 nested ifs", "if (a) " * 10000 + "x();"),
            ("10,000 nested loops", "for (;;) " * 10000 + "x();"),
            ("a 50,000-branch else-if chain", "if (a) {}" + " else if (a) {}" * 50000),
        ]
        out = []
        for name, source in cases:
            st, _, body = await request(s.port, put_post("/transpile", source.encode()), timeout=60)
            out.append(f"{name} -> {st}")
        for n in (500, 1000, 2000, 3000):
            body = json.dumps({"code": "export const y = " + "+".join(f"x{i}" for i in range(n)) + ";",
                               "loader": "ts", "minify": True}).encode()
            t0 = time.time()
            st, _, _ = await request(s.port, put_post("/transpile", body, "content-type: application/json\r\ncache-control: no-store\r\n"), timeout=60)
            out.append(f"a constant of {n} terms, minified -> {st} in {(time.time() - t0) * 1000:.0f} ms")
        print("transpile: " + "; ".join(out))


def put_post(path, body, extra=""):
    return (f"POST {path} HTTP/1.1\r\nhost: spike\r\nconnection: close\r\ncontent-length: {len(body)}\r\n{extra}\r\n"
            .encode() + body)


def tree_rss_mib(pid):
    """The resident memory of a process and every process below it."""
    children = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    stat = f.read()
                children.setdefault(int(stat[stat.rfind(")") + 2:].split()[1]), []).append(int(entry))
            except OSError:
                pass
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        todo.extend(children.get(p, []))
        try:
            with open(f"/proc/{p}/status") as f:
                total += next((int(l.split()[1]) for l in f if l.startswith("VmRSS:")), 0)
        except OSError:
            pass
    return total / 1024


async def probe_chromium():
    """A page that allocates 1.5 GiB, and an 8192 x 8192 screenshot at scale 2."""
    if not os.path.exists("/usr/bin/chromium"):
        print("chromium: skipped, no /usr/bin/chromium")
        return
    with Server([RENDER]) as s:
        await request(s.port, put_post("/render/html", json.dumps({"html": "<p>warm</p>", "cache": "no"}).encode()), timeout=60)
        base = tree_rss_mib(s.proc.pid)
        peak, stop = [base], asyncio.Event()

        async def sample():
            while not stop.is_set():
                peak[0] = max(peak[0], tree_rss_mib(s.proc.pid))
                await asyncio.sleep(0.02)

        sampler = asyncio.create_task(sample())
        hog = ("<body><script>const keep=[];try{for(let i=0;i<96;i++){const a=new Uint8Array(16<<20);a.fill(1);"
               "keep.push(a)}}catch(e){document.body.append(String(e))}document.body.append(' kept '+keep.length)</script>")
        st, _, body = await request(s.port, put_post("/render/html", json.dumps({"html": hog, "cache": "no"}).encode()), timeout=60)
        stop.set()
        await sampler
        big, _, _ = await request(s.port, get("/render/screenshot?html=x&width=8192&height=8192&deviceScaleFactor=2&cache=no"), timeout=60)
        print(f"chromium: a page allocating 1.5 GiB -> {st} ({body[:90].decode(errors='replace')}); process tree "
              f"{base:.0f} -> peak {peak[0]:.0f} MiB; an 8192 x 8192 screenshot at scale 2 -> {big}")


PROBES = {
    "uploads": probe_uploads,
    "ports": probe_ports,
    "trickle": probe_trickle,
    "unread": probe_unread,
    "slowloris": probe_slowloris,
    "flood": probe_flood,
    "membomb": probe_membomb,
    "overwrite": probe_overwrite,
    "errors": probe_errors,
    "yjs_amplify": probe_yjs_amplify,
    "text_welcome": probe_text_welcome,
    "stacks": probe_stacks,
    "transpile": probe_transpile,
    "chromium": probe_chromium,
}


def main():
    # Writes to connections the server has closed are part of the attacks.
    logging.getLogger("asyncio").setLevel(logging.CRITICAL)
    names = sys.argv[1:] or list(PROBES)
    for name in names:
        if name not in PROBES:
            sys.exit(f"unknown probe {name}; probes: {', '.join(PROBES)}")
    print(f"spike {SPIKE}, {os.cpu_count()} cores, {time.strftime('%Y-%m-%d %H:%M', time.gmtime())} UTC")
    for name in names:
        t0 = time.time()
        asyncio.run(PROBES[name]())
        print(f"  ({name}: {time.time() - t0:.0f} s)")


if __name__ == "__main__":
    main()
