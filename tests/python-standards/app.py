"""A component in Python written against the WASI standards alone (no
spike import), built with componentize-py from the proposals' WIT
(scripts/build-guests.sh; not a crate, so not under tests/fixtures): keyvalue at draft2, config, logging.

  GET  /py/run          runs every call once and answers what it saw, as JSON
  POST /py/append?n=N   appends ".N" to the key `py-appended` by
                        compare-and-swap, retried on a change; answers the tries
  GET  /py/appended     the value of `py-appended`
"""
import json

from componentize_py_types import Err, Ok
from wit_world import exports
from wit_world.imports import atomics, batch, logging
from wit_world.imports import wasi_config_store as config
from wit_world.imports import wasi_keyvalue_store as store
from wit_world.imports.types import (
    Fields, IncomingRequest, OutgoingBody, OutgoingResponse, ResponseOutparam,
)


def send(out: ResponseOutparam, status: int, text: str) -> None:
    response = OutgoingResponse(Fields.from_list([("content-type", b"application/json")]))
    response.set_status_code(status)
    body = response.body()
    ResponseOutparam.set(out, Ok(response))
    with body.write() as stream:
        stream.blocking_write_and_flush(text.encode())
    OutgoingBody.finish(body, None)


def run() -> dict:
    seen = {}
    bucket = store.open("probe")
    bucket.set("py-a", b"one")
    seen["get"] = bucket.get("py-a").decode()
    seen["exists"] = bucket.exists("py-a")
    bucket.delete("py-a")
    seen["gone"] = bucket.get("py-a") is None and not bucket.exists("py-a")

    seen["increments"] = [atomics.increment(bucket, "py-n", 5), atomics.increment(bucket, "py-n", -7)]

    batch.set_many(bucket, [("py-b1", b"x"), ("py-b2", b"y")])
    found = batch.get_many(bucket, ["py-b1", "py-b2", "py-b3"])
    seen["many"] = [[pair[0], pair[1].decode()] if pair else None for pair in found]
    batch.delete_many(bucket, ["py-b1", "py-b2"])
    seen["deleted_many"] = batch.get_many(bucket, ["py-b1", "py-b2"]) == [None, None]

    keys, cursor = [], None
    while True:
        page = bucket.list_keys(cursor)
        keys.extend(k for k in page.keys if k.startswith("py-"))
        cursor = page.cursor
        if cursor is None:
            break
    seen["keys"] = sorted(keys)

    # A swap whose value changed after its handle read it fails, handing
    # back a handle on the value found, which swaps.
    bucket.set("py-cas", b"first")
    cas = atomics.Cas.new(bucket, "py-cas")
    bucket.set("py-cas", b"changed")
    try:
        atomics.swap(cas, b"lost")
        seen["stale"] = "a stale swap succeeded"
    except Err as e:
        failed = e.value
        seen["stale"] = type(failed).__name__ + ":" + failed.value.current().decode()
        atomics.swap(failed.value, b"swapped")
    seen["after_swap"] = bucket.get("py-cas").decode()

    try:
        store.open("secret")
        seen["denied"] = "opened"
    except Err as e:
        seen["denied"] = type(e.value).__name__

    seen["greeting"] = config.get("greeting")
    seen["missing"] = config.get("missing")
    seen["config"] = [list(pair) for pair in config.get_all()]
    logging.log(logging.Level.WARN, "py", "from python")
    return seen


def append(n: str) -> int:
    bucket = store.open("probe")
    cas = atomics.Cas.new(bucket, "py-appended")
    tries = 0
    while True:
        tries += 1
        value = (cas.current() or b"") + ("." + n).encode()
        try:
            atomics.swap(cas, value)
            return tries
        except Err as e:
            if not isinstance(e.value, atomics.CasError_CasFailed):
                raise
            cas = e.value.value


class IncomingHandler(exports.IncomingHandler):
    def handle(self, request: IncomingRequest, out: ResponseOutparam) -> None:
        path = request.path_with_query() or "/"
        try:
            if path == "/py/run":
                send(out, 200, json.dumps(run()))
            elif path == "/py/appended":
                send(out, 200, (store.open("probe").get("py-appended") or b"").decode())
            elif path.startswith("/py/append?n="):
                send(out, 200, str(append(path.split("=", 1)[1])))
            else:
                send(out, 404, json.dumps({"error": "no such path"}))
        except Err as e:
            send(out, 500, json.dumps({"error": repr(e.value)}))
