//! A guard for the request path: heap allocations per request, counted by
//! this test binary's global allocator, against committed budgets. Time
//! per request is noisy on a shared machine; the number of allocations is
//! not, and each one costs on every request of every plugin. A change
//! that adds allocations to the request path fails here and has to raise
//! a budget below, saying why in its diff.
//!
//! Counted: every allocation of the server's threads while N requests are
//! served one after another on a kept-alive connection, after a warm-up,
//! with one plugin loaded (a second plugin's background compile would be
//! counted too). The client's thread is not counted. `bench/http_hello.sh`
//! counts the release build the same way, with an `LD_PRELOAD` counter.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::io::{Read, Write};
use std::sync::atomic::{AtomicU64, Ordering};

use spike_e2e::*;

/// Allocations per request of a fresh instance of the plain hello
/// component (no SDK), end to end: the connection's request and response,
/// routing, the instance, the guest's calls.
const FRESH_HELLO: f64 = 103.0;
/// The same, with `instance_reuse`: no instance to build.
const REUSED_HELLO: f64 = 61.0;
/// What one KV read adds (the hello component's `GET /hello/counter`
/// against its `GET /hello`, both fresh). 24 until the redb read moved to
/// the blocking pool (a value may be 25 MiB): its task, and the namespace
/// and key it owns, are 3 more.
const KV_READ: f64 = 27.0;

struct Counting;

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

thread_local! {
    /// Set on the client's thread: its allocations are not the server's.
    static UNCOUNTED: Cell<bool> = const { Cell::new(false) };
}

fn count() {
    if !UNCOUNTED.try_with(Cell::get).unwrap_or(true) {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
    }
}

// SAFETY: every call is passed to the system allocator unchanged; the
// count is an atomic add and a const thread-local read, neither of which
// allocates.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count();
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count();
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count();
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static COUNTING: Counting = Counting;

/// Requests counted per measure, after as many of warm-up.
const REQUESTS: u64 = 1000;

/// Allocations per request of `GET path`, served `REQUESTS` times on one
/// kept-alive connection from a thread of its own.
async fn per_request(server: &TestServer, path: &str) -> f64 {
    let (addr, path) = (server.addr(), path.to_string());
    let client = std::thread::spawn(move || {
        UNCOUNTED.with(|u| u.set(true));
        let mut stream = std::net::TcpStream::connect(addr).unwrap();
        stream
            .set_read_timeout(Some(std::time::Duration::from_secs(10)))
            .unwrap();
        let request = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n");
        let mut get = || {
            stream.write_all(request.as_bytes()).unwrap();
            read_response(&mut stream);
        };
        for _ in 0..REQUESTS {
            get();
        }
        let before = ALLOCATIONS.load(Ordering::Relaxed);
        for _ in 0..REQUESTS {
            get();
        }
        ALLOCATIONS.load(Ordering::Relaxed) - before
    });
    let counted = within(tokio::task::spawn_blocking(move || client.join().unwrap()))
        .await
        .unwrap();
    counted as f64 / REQUESTS as f64
}

/// Reads one response with a `content-length` body; panics on anything
/// but a 200.
fn read_response(stream: &mut std::net::TcpStream) {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        stream.read_exact(&mut byte).unwrap();
        head.push(byte[0]);
    }
    let head = String::from_utf8(head).unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let length: usize = head
        .lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse().ok())?
        })
        .expect("a content-length");
    let mut body = vec![0; length];
    stream.read_exact(&mut body).unwrap();
}

/// `measured` within its budget; half an allocation of slack for a timer
/// of the runtime that fired during the run.
fn within_budget(what: &str, measured: f64, budget: f64) {
    println!("{what}: {measured:.2} allocations per request (budget {budget})");
    assert!(
        measured <= budget + 0.5,
        "{what}: {measured:.2} allocations per request, over the budget of {budget}: \
         a change added allocations to the request path (raise the budget in \
         tests/e2e/allocations.rs only with the reason)"
    );
}

/// A server of `plugin` alone, with no expiry sweep during the count (the
/// tests' configuration sweeps every 100 ms).
async fn start(plugin: Plugin<'_>) -> TestServer {
    TestServer::start_with(&[plugin], |config| {
        config.kv_sweep_interval = std::time::Duration::from_secs(3600);
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_request_path_allocates_within_its_budget() {
    let plain = Plugin {
        name: "plain",
        guest: "fixture_plain_hello",
        manifest: "[[routes]]\nprefix = \"/plain\"\n",
    };
    let server = start(plain).await;
    within_budget(
        "fresh hello",
        per_request(&server, "/plain").await,
        FRESH_HELLO,
    );
    drop(server);

    let reused = Plugin {
        name: "plain",
        guest: "fixture_plain_hello",
        manifest: "[[routes]]\nprefix = \"/plain\"\n[limits]\ninstance_reuse = 1000000\n",
    };
    let server = start(reused).await;
    within_budget(
        "reused hello",
        per_request(&server, "/plain").await,
        REUSED_HELLO,
    );
    drop(server);

    let hello = Plugin {
        name: "hello",
        guest: "hello",
        manifest: "[[routes]]\nprefix = \"/hello\"\n[grants]\nkv = [\"hello\"]\n",
    };
    let server = start(hello).await;
    let plain = per_request(&server, "/hello").await;
    let read = per_request(&server, "/hello/counter").await;
    within_budget("one KV read", read - plain, KV_READ);
}
