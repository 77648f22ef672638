//! The renderer end to end: the render plugin (`components/render`) in a
//! real spike, driving Debian's Chromium, rendering local pages served by
//! the test. What comes back is read as a user would: PNG pixels, PDF pages
//! and text (poppler), HTML.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use serde_json::json;
use spike_e2e::render_pages::*;
use spike_e2e::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn screenshots_have_the_size_and_pixels_asked_for() {
    let secret = start_secret().await;
    let pages = start_pages(&secret).await;
    let server = start_renderer(&pages, |_| {}).await;
    let url = url_encode(&pages.url("/box"));

    // 200 by 100 CSS pixels at scale 2: a 400 by 200 image, the red box at
    // (10, 20)-(60, 60) in CSS pixels.
    let shot = render_get(
        &server,
        &format!("/render/screenshot?url={url}&width=200&height=100&deviceScaleFactor=2&cache=no"),
    )
    .await;
    assert_eq!(shot.status, 200, "{}", shot.text());
    assert_eq!(shot.header("content-type"), "image/png");
    assert_eq!(shot.header("x-cache"), "bypass");
    assert_eq!(shot.header("x-render-status"), "200");
    let image = decode_png(&shot.body);
    assert_eq!((image.0, image.1), (400, 200));
    assert_eq!(pixel(&image, 70, 80), [255, 0, 0], "inside the box");
    assert_eq!(pixel(&image, 10, 10), [255, 255, 255], "outside the box");
    assert_eq!(pixel(&image, 130, 130), [255, 255, 255], "past the box");

    // The whole page, 3,000 CSS pixels tall, in a 300 by 200 viewport.
    let tall = url_encode(&pages.url("/tall"));
    let full = render_post(
        &server,
        "/render/screenshot",
        json!({"url": pages.url("/tall"), "width": 300, "height": 200, "fullPage": true, "cache": "no"}),
    )
    .await;
    assert_eq!(full.status, 200, "{}", full.text());
    let image = decode_png(&full.body);
    assert_eq!((image.0, image.1), (300, 3000));
    let viewport_only = render_get(
        &server,
        &format!("/render/screenshot?url={tall}&width=300&height=200&cache=no"),
    )
    .await;
    assert_eq!(decode_png(&viewport_only.body).1, 200);

    // Clipped to an element: the box alone, all red.
    let clip = render_get(
        &server,
        &format!("/render/screenshot?url={url}&clip=%23box&cache=no"),
    )
    .await;
    let image = decode_png(&clip.body);
    assert_eq!((image.0, image.1), (50, 40));
    assert_eq!(pixel(&image, 25, 20), [255, 0, 0]);

    // Other formats.
    let jpeg = render_get(
        &server,
        &format!("/render/screenshot?url={url}&format=jpeg&quality=50&cache=no"),
    )
    .await;
    assert_eq!(jpeg.header("content-type"), "image/jpeg");
    assert_eq!(&jpeg.body[..2], [0xff, 0xd8]);
    let webp = render_get(
        &server,
        &format!("/render/screenshot?url={url}&format=webp&cache=no"),
    )
    .await;
    assert_eq!(webp.header("content-type"), "image/webp");
    assert_eq!(&webp.body[8..12], b"WEBP");

    // The old renderer's route: a full-page JPEG, `sleep` in milliseconds.
    let legacy = render_get(&server, &format!("/render?url={tall}&sleep=100&cache=no")).await;
    assert_eq!(legacy.status, 200, "{}", legacy.text());
    assert_eq!(legacy.header("content-type"), "image/jpeg");

    // Inline HTML renders too.
    let inline = render_post(
        &server,
        "/render/screenshot",
        json!({"html": "<body style='margin:0;background:rgb(0,0,255)'></body>", "width": 20, "height": 10, "cache": "no"}),
    )
    .await;
    let image = decode_png(&inline.body);
    assert_eq!(
        (image.0, image.1, pixel(&image, 5, 5)),
        (20, 10, [0, 0, 255])
    );
    assert_eq!(inline.header("x-render-final-url"), "about:blank");
    assert_eq!(secret.connections.load(Ordering::SeqCst), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pdfs_html_waits_and_the_cache() {
    let secret = start_secret().await;
    let pages = start_pages(&secret).await;
    let server = start_renderer(&pages, |_| {}).await;

    // Three printed pages with their text; landscape and a header.
    let book = render_post(
        &server,
        "/render/pdf",
        json!({"url": pages.url("/book"), "paper": "a4", "cache": "no"}),
    )
    .await;
    assert_eq!(book.status, 200, "{}", book.text());
    assert_eq!(book.header("content-type"), "application/pdf");
    let (count, text, info) = pdf_facts(&book.body);
    assert_eq!(count, 3, "{info}");
    for chapter in ["Chapter one", "Chapter two", "Chapter three"] {
        assert!(text.contains(chapter), "{chapter} missing from {text}");
    }
    assert!(info.contains("(A4)"), "{info}");
    let landscape = render_post(
        &server,
        "/render/pdf",
        json!({"url": pages.url("/book"), "landscape": true, "margin": "1in",
               "headerTemplate": "<span style='font-size:10px'>HEADER-MARK</span>", "cache": "no"}),
    )
    .await;
    let (_, text, info) = pdf_facts(&landscape.body);
    assert!(info.contains("792 x 612"), "landscape letter: {info}");
    assert!(text.contains("HEADER-MARK"), "{text}");

    // HTML after the page's scripts ran, and the ways to wait for them.
    let late = url_encode(&pages.url("/late"));
    let html = render_get(
        &server,
        &format!("/render/html?url={late}&waitForSelector=%23late&cache=no"),
    )
    .await;
    assert_eq!(html.header("content-type"), "text/html; charset=utf-8");
    assert!(
        html.text().starts_with("<!DOCTYPE html>"),
        "{}",
        html.text()
    );
    assert!(
        html.text().contains(r#"<p id="late">late</p>"#),
        "{}",
        html.text()
    );
    let slept = render_get(
        &server,
        &format!("/render/html?url={late}&sleep=600&cache=no"),
    )
    .await;
    assert!(slept.text().contains(r#"id="late""#), "{}", slept.text());
    let idle = render_get(
        &server,
        &format!("/render/html?url={late}&waitUntil=networkidle&cache=no"),
    )
    .await;
    assert!(
        idle.text().contains("fetched-after-load"),
        "{}",
        idle.text()
    );
    let inline_idle = render_post(
        &server,
        "/render/html",
        json!({"html": "<p>inline</p>", "waitUntil": "networkidle", "timeout": 10000, "cache": "no"}),
    )
    .await;
    assert_eq!(inline_idle.status, 200, "{}", inline_idle.text());
    assert!(inline_idle.text().contains("<p>inline</p>"));

    // The cache: a miss renders, a hit does not even reach the page.
    let counted = url_encode(&pages.url("/counted"));
    let first = render_get(&server, &format!("/render/html?url={counted}")).await;
    assert_eq!(first.header("x-cache"), "miss");
    assert_eq!(first.header("cache-control"), "public, max-age=3600");
    let second = render_get(&server, &format!("/render/html?url={counted}")).await;
    assert_eq!(second.header("x-cache"), "hit");
    assert_eq!(second.body, first.body);
    assert_eq!(second.header("x-render-final-url"), pages.url("/counted"));
    assert_eq!(pages.counted.load(Ordering::SeqCst), 1);
    // Other options are another render; `cache=no` bypasses.
    let wider = render_get(&server, &format!("/render/html?url={counted}&width=1000")).await;
    assert_eq!(wider.header("x-cache"), "miss");
    let bypass = render_get(&server, &format!("/render/html?url={counted}&cache=no")).await;
    assert_eq!(bypass.header("x-cache"), "bypass");
    assert!(bypass.text().contains("visit 3"), "{}", bypass.text());

    // Bad requests say what is wrong, as JSON.
    let url = url_encode(&pages.url("/box"));
    for (query, says) in [
        (format!("url={url}&colour=red"), "unknown option 'colour'"),
        ("url=file:///etc/passwd".to_string(), "only http and https"),
        ("url=javascript:alert(1)".to_string(), "only http and https"),
        (format!("url={url}&width=99999"), "viewport width"),
        (format!("url={url}&quality=101"), "quality"),
        (format!("url={url}&format=gif"), "format 'gif'"),
        (format!("url={url}&delay=60000"), "delay"),
        ("width=100".to_string(), "give the page's 'url'"),
        (
            format!("url={url}&clip=%23nothing&cache=no"),
            "no element matches",
        ),
        (
            format!("url={url}&waitForSelector=%5B%5B&cache=no"),
            "not a valid CSS selector",
        ),
    ] {
        let r = render_get(&server, &format!("/render/screenshot?{query}")).await;
        assert_eq!(r.status, 400, "{query}: {}", r.text());
        assert_eq!(error_code(&r.json()), "bad_request");
        assert!(
            r.json()["error"]["message"]
                .as_str()
                .unwrap()
                .contains(says),
            "{query}: {}",
            r.text()
        );
    }
    let (status, body) = send_json(client().post(server.at("/render/pdf")).body("{nope")).await;
    assert_eq!((status, error_code(&body)), (400, "bad_request"));

    let metrics = server.metrics_text().await;
    assert!(
        metrics.contains(r#"spike_renders_total{plugin="render",kind="ok"}"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"spike_renders_total{plugin="render",kind="invalid"}"#),
        "{metrics}"
    );
    assert!(
        metrics.contains("spike_render_browser_launches_total 1"),
        "{metrics}"
    );
    assert_eq!(secret.connections.load(Ordering::SeqCst), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_guard_keeps_pages_off_internal_addresses() {
    let secret = start_secret().await;
    let pages = start_pages(&secret).await;
    let server = start_renderer(&pages, |_| {}).await;
    let blocked = |r: &Rendered| r.status == 403 && error_code(&r.json()) == "blocked";

    // Directly: loopback on another port, metadata, private, a name that
    // resolves to loopback, over http and https.
    for target in [
        format!("http://127.0.0.1:{}/", secret.port),
        format!("https://127.0.0.1:{}/", secret.port),
        "http://169.254.169.254/latest/meta-data/".to_string(),
        "http://10.0.0.1/".to_string(),
        "http://[::1]/".to_string(),
        format!("http://{INTERNAL_NAME}:{}/", secret.port),
    ] {
        let r = render_get(
            &server,
            &format!("/render/html?url={}&cache=no", url_encode(&target)),
        )
        .await;
        assert!(blocked(&r), "{target}: {} {}", r.status, r.text());
    }
    // Through a redirect of an allowed page.
    let redirected = render_get(
        &server,
        &format!(
            "/render/screenshot?url={}&cache=no",
            url_encode(&pages.url("/redirect"))
        ),
    )
    .await;
    assert!(
        blocked(&redirected),
        "{} {}",
        redirected.status,
        redirected.text()
    );
    assert!(
        redirected
            .text()
            .contains(&format!("127.0.0.1:{}", secret.port))
    );
    // Sub-requests of an allowed page (an image over http, one over https
    // to a name that resolves to loopback, a fetch): the page renders
    // without them.
    let sub = render_get(
        &server,
        &format!(
            "/render/html?url={}&cache=no",
            url_encode(&pages.url("/sub"))
        ),
    )
    .await;
    assert_eq!(sub.status, 200, "{}", sub.text());
    assert!(sub.text().contains("sub-requests"));
    let refused: usize = sub.header("x-render-blocked").parse().unwrap();
    assert!(refused >= 2, "blocked {refused}");
    // Inline HTML is held to the same rule.
    let inline = render_post(
        &server,
        "/render/html",
        json!({"html": format!("<img src='http://127.0.0.1:{}/x'>", secret.port), "cache": "no"}),
    )
    .await;
    assert_eq!(
        (inline.status, inline.header("x-render-blocked")),
        (200, "1")
    );

    assert_eq!(
        secret.connections.load(Ordering::SeqCst),
        0,
        "a render reached the secret"
    );
    let metrics = server.metrics_text().await;
    assert!(
        metrics.contains(r#"spike_render_blocked_total{plugin="render",kind="page"} 7"#),
        "{metrics}"
    );
}

/// A plain `spike serve` renders pages that load from the server itself
/// (the editor's previews import the site's modules): its public address
/// is what any client may reach. Its metrics listener stays out of reach,
/// and a render that waits in vain for what was refused says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_reach_this_servers_own_address_and_a_stalled_render_says_what_was_refused() {
    let site = tempfile::tempdir().unwrap();
    std::fs::write(site.path().join("answer.js"), "export default 42;\n").unwrap();
    let site_config: spike::assets::SiteConfig =
        format!("/={}", site.path().display()).parse().unwrap();
    // No --render-allow at all, as a plain `spike serve` starts.
    let server = TestServer::start_with(&[RENDER], move |config| {
        config.sites = vec![site_config];
        config.metrics_listen = Some("127.0.0.1:0".parse().unwrap());
    })
    .await;
    let (port, metrics) = (server.addr().port(), server.server().metrics_addr.unwrap());
    let html = format!(
        "<body><script type=module>
           import answer from 'http://127.0.0.1:{port}/answer.js';
           document.body.dataset.answer = answer;
           document.body.dataset.metrics = await fetch('http://127.0.0.1:{}/metrics')
             .then(() => 'reached', () => 'refused');
         </script></body>",
        metrics.port()
    );
    let r = render_post(
        &server,
        "/render/html",
        json!({"html": html, "waitForSelector": "body[data-metrics]", "cache": "no"}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.text().contains(r#"data-answer="42""#), "{}", r.text());
    assert!(
        r.text().contains(r#"data-metrics="refused""#),
        "{}",
        r.text()
    );

    // A module the page waits for, refused: the timeout names it.
    let stalled = format!(
        "<body><script type=module>
           import x from 'http://127.0.0.1:{}/x.js';
           document.body.dataset.done = x;
         </script></body>",
        metrics.port()
    );
    let r = render_post(
        &server,
        "/render/html",
        json!({"html": stalled, "waitForSelector": "body[data-done]", "timeout": 3000, "cache": "no"}),
    )
    .await;
    assert_eq!(r.status, 504, "{}", r.text());
    let message = r.json()["error"]["message"].as_str().unwrap().to_string();
    assert!(
        message.contains(&format!("127.0.0.1:{}", metrics.port()))
            && message.contains("--render-allow"),
        "{message}"
    );
}

/// WebRTC cannot go around the guard (the hostile probe: a page's TURN
/// server at 127.0.0.1 got 10 STUN datagrams while the proxy refused every
/// request of the page), and the renderer's own DevTools port stays out of
/// reach even with all of loopback allowed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webrtc_and_the_browsers_own_ports_stay_behind_the_guard() {
    use std::sync::Arc;
    use std::sync::atomic::AtomicUsize;
    let udp = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let udp_port = udp.local_addr().unwrap().port();
    let datagrams = Arc::new(AtomicUsize::new(0));
    let counted = datagrams.clone();
    tokio::spawn(async move {
        let mut buf = [0u8; 2048];
        while udp.recv_from(&mut buf).await.is_ok() {
            counted.fetch_add(1, Ordering::SeqCst);
        }
    });
    let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let tcp_port = tcp.local_addr().unwrap().port();
    let connections = Arc::new(AtomicUsize::new(0));
    let counted = connections.clone();
    tokio::spawn(async move {
        while tcp.accept().await.is_ok() {
            counted.fetch_add(1, Ordering::SeqCst);
        }
    });
    let secret = start_secret().await;
    let pages = start_pages(&secret).await;
    let server = start_renderer(&pages, |_| {}).await;
    let page = format!(
        r#"<p id="out">gathering</p><script>
        const pc = new RTCPeerConnection({{ iceServers: [
          {{ urls: 'stun:127.0.0.1:{udp_port}' }},
          {{ urls: 'turn:127.0.0.1:{udp_port}?transport=udp', username: 'u', credential: 'p' }},
          {{ urls: 'turn:127.0.0.1:{tcp_port}?transport=tcp', username: 'u', credential: 'p' }},
        ] }});
        pc.createDataChannel('probe');
        pc.onicecandidate = (e) => {{ if (!e.candidate) document.getElementById('out').textContent = 'done'; }};
        pc.createOffer().then((offer) => pc.setLocalDescription(offer));
        </script>"#
    );
    let r = render_post(
        &server,
        "/render/html",
        json!({"html": page, "delay": 3000, "cache": "no"}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        datagrams.load(Ordering::SeqCst),
        0,
        "UDP went around the guard"
    );
    assert_eq!(
        connections.load(Ordering::SeqCst),
        0,
        "TCP went around the guard"
    );

    // Chromium's DevTools port (in its profile's DevToolsActivePort), with
    // all of loopback allowed, as `--render-allow 127.0.0.1` allows it.
    let server = start_renderer(&pages, |config| {
        config.render.allow = vec!["127.0.0.1".parse().unwrap()];
    })
    .await;
    warm_up(&server).await;
    let dirs: Vec<_> = std::fs::read_dir(server.data_dir.join("render"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    let active = (dirs.iter())
        .find_map(|d| std::fs::read_to_string(d.join("DevToolsActivePort")).ok())
        .unwrap_or_else(|| {
            let listing: Vec<_> = (dirs.iter())
                .flat_map(|d| std::fs::read_dir(d).unwrap().map(|e| e.unwrap().path()))
                .collect();
            panic!("no DevToolsActivePort in {listing:?}")
        });
    let devtools: u16 = active.lines().next().unwrap().parse().unwrap();
    let target = format!("http://127.0.0.1:{devtools}/json/version");
    let r = render_get(
        &server,
        &format!("/render/html?url={}&cache=no", url_encode(&target)),
    )
    .await;
    assert_eq!(r.status, 403, "{}", r.text());
    assert!(r.text().contains("DevTools"), "{}", r.text());
}

/// One small render, so that the server's Chromium runs.
async fn warm_up(server: &TestServer) {
    let warm = render_post(
        server,
        "/render/html",
        json!({"html": "<p>hi</p>", "cache": "no"}),
    )
    .await;
    assert_eq!(warm.status, 200, "{}", warm.text());
}

/// Chromium's memory is bounded per page (the hostile probe: a page that
/// allocated 1.5 GiB took the process tree to 3,870 MiB; an 8192 x 8192
/// screenshot at scale 2, 6,160 MiB): a page past `--render-page-mib` is
/// stopped and its render answered 413, and a screenshot larger than 4096
/// x 4096 device pixels is refused before the browser draws it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_past_its_memory_is_stopped_and_huge_screenshots_refused() {
    let secret = start_secret().await;
    let pages = start_pages(&secret).await;
    let server = start_renderer(&pages, |config| {
        config.render.page_memory = 300 << 20;
    })
    .await;
    let huge = render_get(
        &server,
        "/render/screenshot?html=x&width=8192&height=8192&deviceScaleFactor=2&cache=no",
    )
    .await;
    assert_eq!(huge.status, 400, "{}", huge.text());
    assert!(huge.text().contains("device pixels"), "{}", huge.text());

    // Warm: the browser runs, its process tree is known.
    warm_up(&server).await;
    let render_dir = server.data_dir.join("render");
    let browser = chromium_of(&render_dir).expect("the server's Chromium");
    let sampling = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let sampler = {
        let sampling = sampling.clone();
        std::thread::spawn(move || {
            let mut peak = 0u64;
            while sampling.load(Ordering::Relaxed) {
                for pid in descendants_of(browser) {
                    peak = peak.max(try_rss_bytes_of(&pid.to_string()).unwrap_or(0));
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            peak
        })
    };
    let hog = "<body><script>const keep = []; try { for (let i = 0; i < 128; i++) { \
               const a = new Uint8Array(16 << 20); a.fill(1); keep.push(a); } } \
               catch (e) { document.body.append(String(e)); } \
               document.body.append(' allocated ' + keep.length);</script></body>";
    let r = render_post(&server, "/render/html", json!({"html": hog, "cache": "no"})).await;
    sampling.store(false, Ordering::Relaxed);
    let peak = sampler.join().unwrap();
    eprintln!("the hog's browser peaked at {} MiB", peak >> 20);
    assert_eq!(r.status, 413, "{}", r.text());
    assert!(r.text().contains("300 MiB of memory"), "{}", r.text());
    assert!(
        peak < 1 << 30,
        "a page of Chromium's reached {} MiB (limit 300)",
        peak >> 20
    );
    let metrics = server.metrics_text().await;
    assert!(
        metrics.contains("spike_render_pages_killed_total 1"),
        "{metrics}"
    );
    // The next render is served.
    let next = render_post(
        &server,
        "/render/html",
        json!({"html": "<p>after</p>", "cache": "no"}),
    )
    .await;
    assert_eq!(next.status, 200, "{}", next.text());
}

/// The Chromium a server runs, by its profile folder under `dir`.
fn chromium_of(dir: &std::path::Path) -> Option<u32> {
    let dir = dir.display().to_string();
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
        let pid: u32 = e.file_name().to_str()?.parse().ok()?;
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
        let cmdline = String::from_utf8_lossy(&cmdline);
        (cmdline.contains(&dir) && !cmdline.contains("--type=")).then_some(pid)
    })
}

/// Every process below `root`.
fn descendants_of(root: u32) -> Vec<u32> {
    let parent = |pid: u32| -> Option<u32> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        stat[stat.rfind(')')? + 1..]
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()
    };
    let all: Vec<(u32, u32)> = std::fs::read_dir("/proc")
        .map(|d| {
            d.flatten()
                .filter_map(|e| e.file_name().to_str()?.parse().ok())
                .filter_map(|pid| Some((pid, parent(pid)?)))
                .collect()
        })
        .unwrap_or_default();
    let mut found = vec![root];
    let mut i = 0;
    while i < found.len() {
        let p = found[i];
        found.extend(all.iter().filter(|(_, pp)| *pp == p).map(|(pid, _)| *pid));
        i += 1;
    }
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_are_bounded_queued_and_timed_out() {
    let secret = start_secret().await;
    let pages = start_pages(&secret).await;
    let server = start_renderer(&pages, |c| {
        c.render.pages = 1;
        c.render.queue = 1;
        c.render.queue_wait = Duration::from_millis(500);
    })
    .await;
    let slow = format!(
        "/render/html?url={}&cache=no",
        url_encode(&pages.url("/slow"))
    );
    let quick = format!(
        "/render/html?url={}&cache=no",
        url_encode(&pages.url("/box"))
    );

    // The one page is busy for 1.5 s: the next render waits in the queue
    // and gives up after 500 ms; one more finds the queue full at once.
    let holder = tokio::spawn({
        let (server_url, slow) = (server.url.clone(), slow.clone());
        async move {
            within(client().get(format!("{server_url}{slow}")).send())
                .await
                .unwrap()
                .status()
        }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let queued = tokio::spawn({
        let (server_url, quick) = (server.url.clone(), quick.clone());
        async move {
            let started = Instant::now();
            let r = within(client().get(format!("{server_url}{quick}")).send())
                .await
                .unwrap();
            (
                r.status(),
                r.headers().get("retry-after").cloned(),
                started.elapsed(),
            )
        }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let started = Instant::now();
    let full = render_get(&server, &quick).await;
    assert_eq!((full.status, error_code(&full.json())), (503, "busy"));
    assert!(
        started.elapsed() < Duration::from_millis(300),
        "refused at once"
    );
    assert_eq!(full.header("retry-after"), "1");
    let (status, retry_after, waited) = queued.await.unwrap();
    assert_eq!(status, 503);
    assert_eq!(retry_after.unwrap(), "1");
    assert!(waited >= Duration::from_millis(450), "waited {waited:?}");
    assert_eq!(holder.await.unwrap(), 200);

    // A page that never finishes loading meets its deadline...
    let started = Instant::now();
    let never = render_get(
        &server,
        &format!(
            "/render/screenshot?url={}&timeout=1000&cache=no",
            url_encode(&pages.url("/never"))
        ),
    )
    .await;
    assert_eq!(
        (never.status, error_code(&never.json())),
        (504, "render_timeout")
    );
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    // ...and the page is free again for the next one.
    let next = render_get(&server, &quick).await;
    assert_eq!(next.status, 200, "{}", next.text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_browser_is_replaced_under_a_render() {
    let secret = start_secret().await;
    let pages = start_pages(&secret).await;
    let server = start_renderer(&pages, |_| {}).await;
    let slow = format!(
        "/render/html?url={}&cache=no",
        url_encode(&pages.url("/slow"))
    );
    let first = render_get(&server, &slow).await;
    assert_eq!(first.status, 200, "{}", first.text());

    // Chromium is killed while a render waits for its slow page: the render
    // is tried again on a new browser, and succeeds.
    let pids = chromium_pids(&server.data_dir);
    assert_eq!(pids.len(), 1, "one browser: {pids:?}");
    let during = tokio::spawn({
        let url = server.at(&slow);
        async move { within(client().get(url).send()).await.unwrap().status() }
    });
    tokio::time::sleep(Duration::from_millis(400)).await;
    let killed = std::process::Command::new("kill")
        .args(["-9", &pids[0].to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    assert_eq!(during.await.unwrap(), 200);
    let next = render_get(&server, &slow).await;
    assert_eq!(next.status, 200, "{}", next.text());
    let now = chromium_pids(&server.data_dir);
    assert_eq!(now.len(), 1, "{now:?}");
    assert_ne!(now[0], pids[0]);
    let metrics = server.metrics_text().await;
    assert!(
        metrics.contains(r#"spike_render_browser_restarts_total{plugin="-",kind="crashed"} 1"#),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renders_share_no_cookies_or_storage_and_the_browser_is_recycled() {
    let secret = start_secret().await;
    let pages = start_pages(&secret).await;
    let server = start_renderer(&pages, |c| c.render.restart_after = 3).await;
    let set = render_get(
        &server,
        &format!(
            "/render/html?url={}&cache=no",
            url_encode(&pages.url("/cookies/set"))
        ),
    )
    .await;
    assert_eq!(set.status, 200);
    for _ in 0..3 {
        let show = render_get(
            &server,
            &format!(
                "/render/html?url={}&cache=no",
                url_encode(&pages.url("/cookies/show"))
            ),
        )
        .await;
        assert!(
            show.text().contains("cookie=[] storage=[null]"),
            "{}",
            show.text()
        );
    }
    assert_eq!(
        *pages.cookies_seen.lock().unwrap(),
        ["", "", ""],
        "cookies sent to the server"
    );
    // Four renders with restart_after = 3: a second browser took over.
    let metrics = server.metrics_text().await;
    assert!(
        metrics.contains(r#"spike_render_browser_restarts_total{plugin="-",kind="recycled"} 1"#),
        "{metrics}"
    );
    assert!(
        metrics.contains("spike_render_browser_launches_total 2"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_chromium_or_the_grant_render_says_why() {
    let secret = start_secret().await;
    let pages = start_pages(&secret).await;
    let server = start_renderer(&pages, |c| {
        c.render.chromium = "/nonexistent/chromium".into();
    })
    .await;
    let r = render_get(
        &server,
        &format!(
            "/render/screenshot?url={}&cache=no",
            url_encode(&pages.url("/box"))
        ),
    )
    .await;
    assert_eq!(
        (r.status, error_code(&r.json())),
        (503, "renderer_unavailable")
    );
    assert!(
        r.text().contains("apt-get install chromium"),
        "{}",
        r.text()
    );

    let ungranted = Plugin {
        manifest: "[[routes]]\nprefix = \"/render\"\n[grants]\nblob = [\"renders\"]\n",
        ..RENDER
    };
    let server = TestServer::start(&[ungranted, HELLO]).await;
    let r = render_get(
        &server,
        &format!("/render/html?url={}", url_encode(&pages.url("/box"))),
    )
    .await;
    assert_eq!(
        (r.status, error_code(&r.json())),
        (403, "render_not_granted")
    );
    let (status, _) = send(client().get(server.at("/hello"))).await;
    assert_eq!(status, 200);
}
