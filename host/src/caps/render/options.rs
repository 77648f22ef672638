//! A guest's render request, checked and turned into a `Job`: every option
//! bounded, so that no caller can ask the browser for a 100,000-pixel
//! viewport or a ten-minute wait.

use std::time::Duration;

use super::browser::{DEFAULT_VIEWPORT, Viewport};
use super::{RenderError, RenderSettings};
use crate::bindings::spike::host::render as wit;

/// Widest and tallest viewport, in CSS pixels.
const MAX_VIEWPORT: u32 = 8192;
const MAX_SCALE: f32 = 4.0;
/// The most device pixels a page is drawn at (4096 × 4096: 64 MiB as
/// RGBA): the viewport, and what a screenshot takes of the page. One
/// 8192 × 8192 screenshot at scale 2 (1 G pixels) took Chromium to 6 GiB.
pub const MAX_DEVICE_PIXELS: f64 = 4096.0 * 4096.0;
/// Longest `delay-ms`.
const MAX_DELAY: Duration = Duration::from_secs(10);
/// Longest URL (Chromium's own limit is 2 MiB; no page needs that).
const MAX_URL_BYTES: usize = 16 << 10;
/// Largest inline document.
pub const MAX_HTML_BYTES: usize = 5 << 20;
/// Longest selector or header/footer template.
const MAX_TEXT_BYTES: usize = 64 << 10;

/// What a render loads.
#[derive(Debug, Clone)]
pub enum Source {
    /// An http(s) URL, and its host and port for the guard.
    Url {
        url: String,
        host: String,
        port: u16,
    },
    Html(String),
}

/// One render, checked.
#[derive(Debug, Clone)]
pub struct Job {
    pub source: Source,
    pub viewport: Viewport,
    pub network_idle: bool,
    pub selector: Option<String>,
    pub delay: Duration,
    pub timeout: Duration,
    pub output: Output,
}

/// What a render takes of the page.
#[derive(Debug, Clone)]
pub enum Output {
    Screenshot {
        format: wit::ImageFormat,
        quality: Option<u8>,
        full_page: bool,
        clip: Option<String>,
    },
    Pdf(wit::PdfOptions),
    Html,
}

pub fn screenshot(
    page: wit::Page,
    o: wit::ScreenshotOptions,
    settings: &RenderSettings,
) -> Result<Job, RenderError> {
    if let Some(q) = o.quality
        && q > 100
    {
        return Err(invalid(format!("quality {q} is over 100")));
    }
    let clip = o
        .clip_selector
        .map(|s| text("clip selector", s))
        .transpose()?;
    job(
        page,
        Output::Screenshot {
            format: o.format,
            quality: o.quality,
            full_page: o.full_page,
            clip,
        },
        settings,
    )
}

pub fn pdf(
    page: wit::Page,
    o: wit::PdfOptions,
    settings: &RenderSettings,
) -> Result<Job, RenderError> {
    for (name, length, max) in [
        ("paper width", o.paper_width, 200.0),
        ("paper height", o.paper_height, 200.0),
        ("top margin", o.margin_top, 50.0),
        ("right margin", o.margin_right, 50.0),
        ("bottom margin", o.margin_bottom, 50.0),
        ("left margin", o.margin_left, 50.0),
    ] {
        if let Some(l) = length
            && !(l.is_finite() && (0.0..=max).contains(&l))
        {
            return Err(invalid(format!(
                "{name} {l} is out of range (0 to {max} inches)"
            )));
        }
    }
    for w in [o.paper_width, o.paper_height].into_iter().flatten() {
        if w < 0.1 {
            return Err(invalid("the paper is smaller than 0.1 inch".into()));
        }
    }
    let o = wit::PdfOptions {
        header_template: o
            .header_template
            .map(|t| text("header template", t))
            .transpose()?,
        footer_template: o
            .footer_template
            .map(|t| text("footer template", t))
            .transpose()?,
        ..o
    };
    job(page, Output::Pdf(o), settings)
}

pub fn html(page: wit::Page, settings: &RenderSettings) -> Result<Job, RenderError> {
    job(page, Output::Html, settings)
}

fn job(page: wit::Page, output: Output, settings: &RenderSettings) -> Result<Job, RenderError> {
    let source = match page.source {
        wit::Source::Url(url) => url_source(url)?,
        wit::Source::Html(html) if html.len() > MAX_HTML_BYTES => {
            return Err(RenderError::TooLarge(format!(
                "the document is {} bytes, the limit is {MAX_HTML_BYTES}",
                html.len()
            )));
        }
        wit::Source::Html(html) => Source::Html(html),
    };
    let dimension = |name: &str, v: u32, default: u32| match v {
        0 => Ok(default),
        v if v > MAX_VIEWPORT => Err(invalid(format!(
            "viewport {name} {v} is over {MAX_VIEWPORT}"
        ))),
        v => Ok(v),
    };
    let scale = match page.device_scale_factor {
        0.0 => 1.0,
        s if s.is_finite() && s > 0.0 && s <= MAX_SCALE => s,
        s => {
            return Err(invalid(format!(
                "device scale factor {s} is out of range (over 0, at most {MAX_SCALE})"
            )));
        }
    };
    let viewport = Viewport {
        width: dimension("width", page.viewport_width, DEFAULT_VIEWPORT.width)?,
        height: dimension("height", page.viewport_height, DEFAULT_VIEWPORT.height)?,
        scale: scale.into(),
    };
    let pixels = f64::from(viewport.width) * f64::from(viewport.height) * viewport.scale.powi(2);
    if pixels > MAX_DEVICE_PIXELS {
        return Err(invalid(format!(
            "a {} x {} viewport at scale {} is {pixels:.0} device pixels, over {MAX_DEVICE_PIXELS:.0} \
             (4096 x 4096): ask for a smaller viewport or scale",
            viewport.width, viewport.height, viewport.scale
        )));
    }
    let delay = Duration::from_millis(page.delay_ms.into());
    if delay > MAX_DELAY {
        return Err(invalid(format!(
            "delay {} ms is over {} ms",
            page.delay_ms,
            MAX_DELAY.as_millis()
        )));
    }
    let timeout = match page.timeout_ms {
        0 => settings.timeout,
        ms => Duration::from_millis(ms.into()).min(settings.timeout),
    };
    Ok(Job {
        source,
        viewport,
        network_idle: matches!(page.wait_until, wit::WaitEvent::NetworkIdle),
        selector: page
            .wait_for_selector
            .map(|s| text("selector", s))
            .transpose()?,
        delay,
        timeout,
        output,
    })
}

/// An http(s) URL with a host; anything else (`file:`, `javascript:`,
/// `chrome:`, `data:`) is refused before the browser sees it.
fn url_source(url: String) -> Result<Source, RenderError> {
    if url.len() > MAX_URL_BYTES {
        return Err(invalid(format!(
            "the URL is {} bytes, the limit is {MAX_URL_BYTES}",
            url.len()
        )));
    }
    let scheme = url.split_once(':').map(|(s, _)| s.to_ascii_lowercase());
    let https = match scheme.as_deref() {
        Some("https") => true,
        Some("http") => false,
        _ => {
            return Err(invalid(format!(
                "'{}': only http and https URLs are rendered",
                shorten(&url)
            )));
        }
    };
    let uri: http::Uri = url
        .parse()
        .map_err(|_| invalid(format!("'{}' is not a URL", shorten(&url))))?;
    let Some(host) = uri.host().filter(|h| !h.is_empty()) else {
        return Err(invalid(format!("'{}' has no host", shorten(&url))));
    };
    let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
    Ok(Source::Url {
        host: host.to_string(),
        port,
        url,
    })
}

fn text(what: &str, s: String) -> Result<String, RenderError> {
    if s.len() > MAX_TEXT_BYTES {
        return Err(invalid(format!(
            "the {what} is {} bytes, the limit is {MAX_TEXT_BYTES}",
            s.len()
        )));
    }
    if s.trim().is_empty() {
        return Err(invalid(format!("the {what} is empty")));
    }
    Ok(s)
}

/// The start of something long, for a message.
fn shorten(s: &str) -> String {
    match s.char_indices().nth(100) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_string(),
    }
}

fn invalid(message: String) -> RenderError {
    RenderError::Invalid(message)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn page(url: &str) -> wit::Page {
        wit::Page {
            source: wit::Source::Url(url.into()),
            viewport_width: 0,
            viewport_height: 0,
            device_scale_factor: 0.0,
            wait_until: wit::WaitEvent::Load,
            wait_for_selector: None,
            delay_ms: 0,
            timeout_ms: 0,
        }
    }

    #[test]
    fn only_http_and_https_urls_with_a_host() {
        let s = RenderSettings::default();
        let ok = html(page("HTTPS://example.com/a?b=c"), &s).unwrap();
        assert!(
            matches!(ok.source, Source::Url { ref host, port: 443, .. } if host == "example.com")
        );
        assert_eq!(ok.viewport, DEFAULT_VIEWPORT);
        assert_eq!(ok.timeout, s.timeout);
        for bad in [
            "file:///etc/passwd",
            "javascript:alert(1)",
            "chrome://settings",
            "data:text/html,hi",
            "ftp://example.com/",
            "http://",
            "/relative",
            "not a url",
        ] {
            assert!(
                matches!(html(page(bad), &s), Err(RenderError::Invalid(_))),
                "{bad} was accepted"
            );
        }
    }

    #[test]
    fn options_are_bounded() {
        let s = RenderSettings::default();
        let mut p = page("http://example.com/");
        p.viewport_width = 9000;
        assert!(html(p, &s).is_err());
        let mut p = page("http://example.com/");
        p.device_scale_factor = f32::NAN;
        assert!(html(p, &s).is_err());
        // The hostile probe's 8192 x 8192 at scale 2; 4096 x 4096 at 1 fits.
        let mut p = page("http://example.com/");
        (p.viewport_width, p.viewport_height, p.device_scale_factor) = (8192, 8192, 2.0);
        assert!(matches!(html(p, &s), Err(RenderError::Invalid(m)) if m.contains("device pixels")));
        let mut p = page("http://example.com/");
        (p.viewport_width, p.viewport_height) = (4096, 4096);
        assert!(html(p, &s).is_ok());
        let mut p = page("http://example.com/");
        (p.viewport_width, p.viewport_height, p.device_scale_factor) = (2048, 2048, 2.5);
        assert!(html(p, &s).is_err());
        let mut p = page("http://example.com/");
        p.delay_ms = 60_000;
        assert!(html(p, &s).is_err());
        let mut p = page("http://example.com/");
        p.timeout_ms = 3_600_000;
        assert_eq!(html(p, &s).unwrap().timeout, s.timeout);
        let mut p = page("http://example.com/");
        p.wait_for_selector = Some(" ".into());
        assert!(html(p, &s).is_err());
        let shot = wit::ScreenshotOptions {
            format: wit::ImageFormat::Jpeg,
            quality: Some(101),
            full_page: false,
            clip_selector: None,
        };
        assert!(screenshot(page("http://example.com/"), shot, &s).is_err());
    }
}
