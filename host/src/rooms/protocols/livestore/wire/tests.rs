use super::*;
use serde_json::{Value, json};

fn event(seq: u64) -> Event {
    serde_json::from_value(json!({
        "name": "todoCreated-v1",
        "args": { "id": format!("t{seq}"), "text": "milk \"2%\"" },
        "seqNum": seq,
        "parentSeqNum": seq - 1,
        "clientId": "client-a",
        "sessionId": "session-1",
    }))
    .unwrap()
}

fn value(frame: &Frame) -> Value {
    let Frame::Text(text) = frame else {
        panic!("a text frame")
    };
    serde_json::from_str(text).unwrap()
}

#[test]
fn rpc_requests_are_read_as_the_client_encodes_them() {
    let pull = r#"{"_tag":"Request","id":"7","tag":"SyncWsRpc.Pull","payload":{"storeId":"s1","payload":{"authToken":"x"},"live":true,"cursor":{"_tag":"Some","value":{"backendId":"b1","eventSequenceNumber":41}}},"headers":[],"traceId":"t","spanId":"s","sampled":true}"#;
    match parse(Dialect::Rpc, pull).unwrap() {
        Request::Pull {
            id,
            store,
            cursor,
            backend,
            live,
        } => {
            assert_eq!((id.as_str(), store.as_deref()), ("7", Some("s1")));
            assert_eq!(
                (cursor, backend.as_deref(), live),
                (Some(41), Some("b1"), true)
            );
        }
        other => panic!("{other:?}"),
    }
    let push = json!({"_tag":"Request","id":"8","tag":"SyncWsRpc.Push","headers":[],
        "payload":{"storeId":"s1","batch":[event(1), event(2)],"backendId":{"_tag":"None"}}});
    match parse(Dialect::Rpc, &push.to_string()).unwrap() {
        Request::Push {
            id, batch, backend, ..
        } => {
            assert_eq!((id.as_str(), batch.len(), backend), ("8", 2, None));
            assert_eq!(
                batch[1].args.as_ref().unwrap().get(),
                r#"{"id":"t2","text":"milk \"2%\""}"#
            );
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        parse(Dialect::Rpc, r#"{"_tag":"Ping"}"#),
        Ok(Request::Ping)
    ));
    assert!(matches!(
        parse(Dialect::Rpc, r#"{"_tag":"Ack","requestId":"7"}"#),
        Ok(Request::Ack)
    ));
    assert!(matches!(
        parse(Dialect::Rpc, r#"{"_tag":"Interrupt","requestId":"7","interruptors":[]}"#),
        Ok(Request::Interrupt { id }) if id == "7"
    ));
    assert!(matches!(
        parse(Dialect::Rpc, r#"{"_tag":"Request","id":"9","tag":"Admin.Reset","payload":{},"headers":[]}"#),
        Ok(Request::Unsupported { id, .. }) if id == "9"
    ));
}

#[test]
fn bad_messages_say_what_is_wrong() {
    for (text, says) in [
        ("{", "not a message"),
        (r#"{"_tag":"Nope"}"#, "unknown message 'Nope'"),
        (
            r#"{"_tag":"Request","tag":"SyncWsRpc.Pull","payload":{}}"#,
            "without id",
        ),
        (
            r#"{"_tag":"Request","id":"1","tag":"SyncWsRpc.Pull","payload":{"storeId":"s","live":true,"cursor":{"_tag":"Some"}}}"#,
            "an option must be",
        ),
        (
            r#"{"_tag":"Request","id":"1","tag":"SyncWsRpc.Push","payload":{"storeId":"s","batch":[{"name":1}],"backendId":{"_tag":"None"}}}"#,
            "a bad push",
        ),
        (
            r#"{"_tag":"WSMessage.PullReq","requestId":"1"}"#,
            "unknown message",
        ),
    ] {
        let e = parse(Dialect::Rpc, text).unwrap_err();
        assert!(e.contains(says), "{text}: {e}");
    }
}

#[test]
fn ws_message_requests_are_read() {
    let pull = parse(
        Dialect::WsMessage,
        r#"{"_tag":"WSMessage.PullReq","requestId":"r1","cursor":3}"#,
    );
    assert!(
        matches!(pull, Ok(Request::Pull { id, cursor: Some(3), live: false, .. }) if id == "r1")
    );
    let push = json!({"_tag":"WSMessage.PushReq","requestId":"r2","batch":[event(1)]});
    assert!(matches!(
        parse(Dialect::WsMessage, &push.to_string()),
        Ok(Request::Push { batch, .. }) if batch.len() == 1
    ));
    assert!(matches!(
        parse(
            Dialect::WsMessage,
            r#"{"_tag":"WSMessage.Ping","requestId":"ping"}"#
        ),
        Ok(Request::Ping)
    ));
    assert!(matches!(
        parse(
            Dialect::WsMessage,
            r#"{"_tag":"WSMessage.AdminInfoReq","requestId":"a","adminSecret":"x"}"#
        ),
        Ok(Request::Unsupported { .. })
    ));
}

#[test]
fn a_push_must_continue_the_head_one_by_one() {
    let batch = [event(4), event(5)];
    assert_eq!(check_push(3, &batch), Ok(()));
    assert_eq!(
        check_push(5, &batch),
        Err(PushRefusal::ServerAhead {
            head: 5,
            provided: 3
        })
    );
    let gap = [event(4), event(6)];
    assert!(matches!(
        check_push(3, &gap),
        Err(PushRefusal::Malformed(_))
    ));
    let mut wrong = event(4);
    wrong.seq_num = 9;
    assert!(matches!(
        check_push(3, &[wrong]),
        Err(PushRefusal::Malformed(_))
    ));
    // Found by fuzzing: nothing follows the last number there is.
    let mut last = event(1);
    last.parent_seq_num = u64::MAX;
    assert!(matches!(
        check_push(u64::MAX, &[last]),
        Err(PushRefusal::Malformed(_))
    ));
}

fn stored_events(n: u64) -> Vec<bytes::Bytes> {
    (1..=n)
        .map(|s| stored(&event(s), "2026-11-22T10:00:00.000Z"))
        .collect()
}

#[test]
fn rpc_pages_hold_a_hundred_events_and_count_what_remains() {
    let pages = Pages {
        dialect: Dialect::Rpc,
        backend: "b1",
        request: "7",
        pulled: true,
    };
    let items = items(Dialect::Rpc, &stored_events(150)).unwrap();
    let frames = pages.frames(&items, 20);
    assert_eq!(frames.len(), 2);
    let first = value(&frames[0]);
    assert_eq!(first["_tag"], "Chunk");
    assert_eq!(first["requestId"], "7");
    let response = &first["values"][0];
    assert_eq!(response["backendId"], "b1");
    assert_eq!(response["batch"].as_array().unwrap().len(), 100);
    assert_eq!(
        response["pageInfo"],
        json!({"_tag":"MoreKnown","remaining":70})
    );
    let item = &response["batch"][0];
    assert_eq!(
        item["eventEncoded"],
        serde_json::to_value(event(1)).unwrap()
    );
    assert_eq!(
        item["metadata"],
        json!({"_tag":"Some","value":{"_tag":"SyncMessage.SyncMetadata","createdAt":"2026-11-22T10:00:00.000Z"}})
    );
    let last = value(&frames[1]);
    assert_eq!(
        last["values"][0]["pageInfo"],
        json!({"_tag":"MoreKnown","remaining":20})
    );
    let done = pages.frames(&[], 0);
    assert_eq!(
        value(&done[0])["values"][0]["pageInfo"],
        json!({"_tag":"NoMore"})
    );
    assert_eq!(value(&done[0])["values"][0]["batch"], json!([]));
}

#[test]
fn pages_stay_under_the_frame_limit() {
    let big: Vec<bytes::Bytes> = (1..=30u64)
        .map(|s| {
            let mut e = event(s);
            let args = json!({ "blob": "x".repeat(100_000) }).to_string();
            e.args = Some(RawValue::from_string(args).unwrap());
            stored(&e, "2026-11-22T10:00:00.000Z")
        })
        .collect();
    let pages = Pages {
        dialect: Dialect::Rpc,
        backend: "b",
        request: "1",
        pulled: true,
    };
    let frames = pages.frames(&items(Dialect::Rpc, &big).unwrap(), 0);
    assert!(frames.len() >= 4, "{}", frames.len());
    let mut seen = 0;
    for f in &frames {
        assert!(f.len() <= MAX_CHUNK_BYTES, "{}", f.len());
        seen += value(f)["values"][0]["batch"].as_array().unwrap().len();
    }
    assert_eq!(seen, 30);
}

#[test]
fn ws_message_pages_name_the_request_and_its_context() {
    let pages = Pages {
        dialect: Dialect::WsMessage,
        backend: "b",
        request: "push-1",
        pulled: false,
    };
    let frames = pages.frames(&items(Dialect::WsMessage, &stored_events(2)).unwrap(), 0);
    let v = value(&frames[0]);
    assert_eq!(v["_tag"], "WSMessage.PullRes");
    assert_eq!(
        v["requestId"],
        json!({"context":"push","requestId":"push-1"})
    );
    assert_eq!(v["remaining"], 0);
    assert_eq!(
        v["batch"][1]["metadata"],
        json!({"_tag":"Some","value":{"createdAt":"2026-11-22T10:00:00.000Z"}})
    );
}

#[test]
fn answers_are_effect_exits() {
    assert_eq!(
        value(&push_ack(Dialect::Rpc, "4")),
        json!({"_tag":"Exit","requestId":"4","exit":{"_tag":"Success","value":{}}})
    );
    let ahead = PushRefusal::ServerAhead {
        head: 9,
        provided: 7,
    };
    assert_eq!(
        value(&push_refused(Dialect::Rpc, "4", &ahead))["exit"]["cause"],
        json!({"_tag":"Fail","error":{"_tag":"ServerAheadError","minimumExpectedNum":9,"providedNum":7}})
    );
    assert_eq!(
        value(&push_refused(Dialect::WsMessage, "4", &ahead)),
        json!({"_tag":"WSMessage.Error","requestId":"4","message":"Invalid parent event number. Received e7 but expected e9"})
    );
    assert_eq!(
        value(&backend_mismatch("2", "a", "b"))["exit"]["cause"]["error"],
        json!({"_tag":"BackendIdMismatchError","expected":"a","received":"b"})
    );
    assert_eq!(
        value(&error(Dialect::Rpc, "2", "no"))["exit"]["cause"]["error"]["_tag"],
        "UnknownError"
    );
    assert_eq!(value(&pull_done("3"))["exit"], json!({"_tag":"Success"}));
    assert_eq!(
        value(&interrupted("3"))["exit"]["cause"]["_tag"],
        "Interrupt"
    );
    assert_eq!(value(&pong(Dialect::Rpc)), json!({"_tag":"Pong"}));
    assert_eq!(
        value(&pong(Dialect::WsMessage)),
        json!({"_tag":"WSMessage.Pong","requestId":"ping"})
    );
}

#[test]
fn times_are_written_as_javascript_does() {
    assert_eq!(iso_time(0), "1970-01-01T00:00:00.000Z");
    assert_eq!(iso_time(951_782_400_123), "2000-02-29T00:00:00.123Z");
    assert_eq!(iso_time(1_795_393_732_456), "2026-11-23T00:28:52.456Z");
}

#[test]
fn a_corrupt_entry_is_an_error() {
    assert!(items(Dialect::Rpc, &[bytes::Bytes::from_static(b"{")]).is_err());
}
