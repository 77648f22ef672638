"""__NAME__: a spike plugin in Python.

  GET  /__NAME__           a greeting
  POST /__NAME__/counter   adds one to a KV counter and returns it
  GET  /__NAME__/counter   reads it
  POST /__NAME__/notes?text=…  keeps a note in a SQL table
  GET  /__NAME__/notes     the notes, newest first

`spike build` makes plugin/__NAME__.wasm with componentize-py; spike's
imports are modules of `wit_world.imports` (`kv`, `blob`, `secrets`, ...,
and wasi:otel's `tracing`, `metrics`, `logs`), and a WIT `result` error is
raised as `componentize_py_types.Err`.
"""
import json
from urllib.parse import parse_qs

from componentize_py_types import Err, Ok
from wit_world import exports
from wit_world.imports import kv, logs, metrics, sql, tracing, wall_clock
from wit_world.imports import random as wasi_random
from wit_world.imports.wasi_otel_types import InstrumentationScope, Resource
from wit_world.imports.wasi_http_types import (
    Fields, IncomingRequest, Method_Get, Method_Post, OutgoingBody, OutgoingResponse,
    ResponseOutparam,
)


def send(out: ResponseOutparam, status: int, content_type: str, text: str) -> None:
    response = OutgoingResponse(Fields.from_list([("content-type", content_type.encode())]))
    response.set_status_code(status)
    body = response.body()
    ResponseOutparam.set(out, Ok(response))
    with body.write() as stream:
        stream.blocking_write_and_flush(text.encode())
    OutgoingBody.finish(body, None)


def counter(change: bool) -> int:
    namespace = kv.Namespace.open("__NAME__")
    if change:
        return namespace.increment("counter", 1)
    value = namespace.get("counter")
    return 0 if value is None else int(value.decode())


def notes_db() -> sql.Database:
    """The database, its table made on first use."""
    db = sql.Database.open("__NAME__")
    db.exec("CREATE TABLE IF NOT EXISTS notes (id INTEGER PRIMARY KEY, text TEXT NOT NULL CHECK (text <> ''))")
    return db


# Telemetry through wasi:otel: a span in the request's trace, a counter in
# the host's /metrics (spike_guest_notes_added_total{plugin="__NAME__"}).
SCOPE = InstrumentationScope(name="__NAME__", version=None, schema_url=None, attributes=[])


def traced(name: str, work):
    """Runs work() as a span of the request's trace (sent only when the
    host traces the request)."""
    outer = tracing.outer_span_context()
    start = wall_clock.now()
    result = work()
    if outer.trace_flags & tracing.TraceFlags.SAMPLED and outer.trace_id.strip("0"):
        own = tracing.SpanContext(
            trace_id=outer.trace_id, span_id=f"{wasi_random.get_random_u64() | 1:016x}",
            trace_flags=tracing.TraceFlags.SAMPLED, is_remote=False, trace_state=[])
        tracing.on_end(tracing.SpanData(
            span_context=own, parent_span_id=outer.span_id, span_kind=tracing.SpanKind.INTERNAL,
            name=name, start_time=start, end_time=wall_clock.now(), attributes=[], events=[],
            links=[], status=tracing.Status_Ok(), instrumentation_scope=SCOPE,
            dropped_attributes=0, dropped_events=0, dropped_links=0))
    return result


def count(name: str, n: int) -> None:
    """Adds n to the counter name (a delta, as the host adds it up)."""
    now = wall_clock.now()
    point = metrics.SumDataPoint(attributes=[], value=metrics.MetricNumber_U64(n), exemplars=[])
    data = metrics.MetricData_U64Sum(metrics.Sum(
        data_points=[point], start_time=now, time=now,
        temporality=metrics.Temporality.DELTA, is_monotonic=True))
    metric = metrics.Metric(name=name, description="Notes added", unit="", data=data)
    metrics.export(metrics.ResourceMetrics(
        resource=Resource(attributes=[], schema_url=None),
        scope_metrics=[metrics.ScopeMetrics(scope=SCOPE, metrics=[metric])]))


def log(message: str) -> None:
    """A line in the plugin's log (`spike plugins logs`), at info."""
    logs.on_emit(logs.LogRecord(
        timestamp=wall_clock.now(), observed_timestamp=None, severity_text="INFO",
        severity_number=9, body=json.dumps(message), attributes=None, event_name=None,
        resource=None, instrumentation_scope=None, trace_id=None, span_id=None,
        trace_flags=None))


def add_note(text: str) -> dict:
    insert = "INSERT INTO notes (text) VALUES (?)"
    done = traced("add note", lambda: notes_db().query(insert, [sql.Value_Text(text)]))
    count("notes_added", 1)
    log(f"note {done.last_insert_id} added")
    return {"id": done.last_insert_id, "text": text}


def notes() -> list:
    newest = "SELECT id, text FROM notes ORDER BY id DESC LIMIT 100"
    return [{"id": row[0].value, "text": row[1].value} for row in notes_db().query(newest, []).rows]


class IncomingHandler(exports.IncomingHandler):
    def handle(self, request: IncomingRequest, response_out: ResponseOutparam) -> None:
        path, _, query = (request.path_with_query() or "/").partition("?")
        method = request.method()
        try:
            if path == "/__NAME__" and isinstance(method, Method_Get):
                send(response_out, 200, "text/plain", "Hello from __NAME__, in Python.\n")
            elif path == "/__NAME__/counter" and isinstance(method, (Method_Get, Method_Post)):
                count = counter(isinstance(method, Method_Post))
                send(response_out, 200, "application/json", json.dumps({"count": count}))
            elif path == "/__NAME__/notes" and isinstance(method, Method_Post):
                text = parse_qs(query).get("text", [""])[0]
                send(response_out, 200, "application/json", json.dumps(add_note(text)))
            elif path == "/__NAME__/notes" and isinstance(method, Method_Get):
                send(response_out, 200, "application/json", json.dumps(notes()))
            else:
                error = {"code": "not_found", "message": f"nothing at {path}"}
                send(response_out, 404, "application/json", json.dumps({"error": error}))
        except Err as e:
            # The WIT error: a class per case (Error_InvalidInput, ...).
            invalid = type(e.value).__name__ == "Error_InvalidInput"
            error = {"code": type(e.value).__name__, "message": str(getattr(e.value, "value", e.value))}
            send(response_out, 400 if invalid else 500, "application/json", json.dumps({"error": error}))
