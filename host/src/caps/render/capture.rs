//! One render on a prepared page: set the viewport, load the page, wait
//! until it is ready, take the screenshot, PDF or HTML. The renderer bounds
//! all of it with the job's deadline.

use std::time::Duration;

use base64::Engine as _;
use chromiumoxide::cdp::browser_protocol::page::{
    CaptureScreenshotFormat, CaptureScreenshotParams, GetLayoutMetricsParams, PrintToPdfParams,
    Viewport as Clip,
};
use chromiumoxide::error::CdpError;
use chromiumoxide::page::Page;
use serde::Deserialize;

use super::browser::{Prepared, failed, metrics};
use super::options::{Job, MAX_DEVICE_PIXELS, Output, Source};
use super::{RenderError, RenderSettings, Rendered};
use crate::bindings::spike::host::render as wit;

/// Widest and tallest capture, in CSS pixels: Chromium's largest surface
/// is 16,384 pixels a side.
const MAX_CAPTURE_SIDE: f64 = 16_384.0;
/// How long the network must be quiet to count as idle (as Puppeteer's
/// `networkidle0`).
const NETWORK_QUIET: Duration = Duration::from_millis(500);
/// How often a `wait-for-selector` looks.
const SELECTOR_POLL: Duration = Duration::from_millis(25);

pub async fn run(
    prepared: &mut Prepared,
    job: &Job,
    settings: &RenderSettings,
) -> Result<Rendered, RenderError> {
    if prepared.viewport != job.viewport {
        prepared
            .page()
            .execute(metrics(job.viewport))
            .await
            .map_err(|e| failed("setting the viewport", e))?;
        prepared.viewport = job.viewport;
    }
    let page = prepared.page();
    let loaded = match &job.source {
        Source::Url { url, .. } => page.goto(url.as_str()).await.map(|_| ()),
        Source::Html(html) => page.set_content(html).await.map(|_| ()),
    };
    match loaded {
        Ok(()) => {
            if let Some(why) = prepared.proxy.document_refused() {
                return Err(RenderError::Blocked(why));
            }
        }
        // A navigation that failed: refused by the guard (a `CONNECT` the
        // proxy refused), or the network's or server's doing.
        Err(CdpError::ChromeMessage(text)) => {
            let refused = prepared.proxy.document_refused();
            return Err(match refused.or_else(|| prepared.proxy.blocked().pop()) {
                Some(why) => RenderError::Blocked(why),
                None => RenderError::Failed(format!("the page did not load: {text}")),
            });
        }
        Err(e) => return Err(failed("loading the page", e)),
    }
    if job.network_idle {
        // Counted by the render's proxy rather than from Chromium's
        // lifecycle events, whose `networkIdle` may be the blank page's
        // that came before, and does not follow inline HTML.
        prepared.proxy.network_idle(NETWORK_QUIET).await;
    }
    if let Some(selector) = &job.selector {
        wait_for_selector(page, selector).await?;
    }
    if !job.delay.is_zero() {
        tokio::time::sleep(job.delay).await;
    }
    let (body, content_type) = match &job.output {
        Output::Screenshot {
            format,
            quality,
            full_page,
            clip,
        } => {
            let scale = job.viewport.scale;
            screenshot(page, *format, *quality, *full_page, clip.as_deref(), scale).await?
        }
        Output::Pdf(options) => (
            page.pdf(pdf_params(options))
                .await
                .map_err(|e| failed("printing to PDF", e))?,
            "application/pdf",
        ),
        Output::Html => {
            let html: String = evaluate(page, HTML).await?;
            (html.into_bytes(), "text/html; charset=utf-8")
        }
    };
    if body.len() > settings.max_bytes {
        return Err(RenderError::TooLarge(format!(
            "the result is {} bytes, the limit is {} (--render-max-mib)",
            body.len(),
            settings.max_bytes
        )));
    }
    let document: Document = evaluate(page, DOCUMENT).await?;
    Ok(Rendered {
        body,
        content_type,
        final_url: document.url,
        status: document.status.filter(|s| *s > 0),
        blocked: prepared.proxy.blocked(),
    })
}

/// The page's HTML with its doctype, as a browser would save it.
const HTML: &str = "(document.doctype ? new XMLSerializer().serializeToString(document.doctype) \
                    : '') + document.documentElement.outerHTML";

/// Where the page is, and its document's HTTP status (0 when it did not
/// come over HTTP).
const DOCUMENT: &str = "({ url: location.href, status: \
                        performance.getEntriesByType('navigation')[0]?.responseStatus ?? 0 })";

#[derive(Deserialize)]
struct Document {
    url: String,
    status: Option<u16>,
}

async fn evaluate<T: serde::de::DeserializeOwned>(
    page: &Page,
    expression: &str,
) -> Result<T, RenderError> {
    match page.evaluate(expression).await {
        Ok(result) => result
            .into_value()
            .map_err(|e| RenderError::Failed(format!("reading the page: {e}"))),
        Err(CdpError::JavascriptException(e)) => Err(RenderError::Invalid(format!(
            "the page refused: {}",
            e.exception
                .as_ref()
                .and_then(|x| x.description.clone())
                .unwrap_or(e.text.clone())
        ))),
        Err(e) => Err(RenderError::Failed(format!("reading the page: {e}"))),
    }
}

/// A page that threw on a query of `selector`: the selector is malformed.
fn bad_selector(e: RenderError, selector: &str) -> RenderError {
    match e {
        RenderError::Invalid(_) => {
            RenderError::Invalid(format!("'{selector}' is not a valid CSS selector"))
        }
        e => e,
    }
}

/// Waits until `selector` matches an element (the deadline bounds it).
async fn wait_for_selector(page: &Page, selector: &str) -> Result<(), RenderError> {
    let quoted = serde_json::to_string(selector).unwrap_or_default();
    let probe = format!("document.querySelector({quoted}) !== null");
    loop {
        let found: bool = evaluate(page, &probe)
            .await
            .map_err(|e| bad_selector(e, selector))?;
        if found {
            return Ok(());
        }
        tokio::time::sleep(SELECTOR_POLL).await;
    }
}

/// A capture of `width` × `height` CSS pixels at `scale`, cut (from the
/// bottom, then the right) to what `MAX_DEVICE_PIXELS` and
/// `MAX_CAPTURE_SIDE` allow: a full page of 16,384 × 16,384 at scale 4
/// would be 4 G pixels.
fn within_pixels(width: f64, height: f64, scale: f64) -> (f64, f64) {
    let area = MAX_DEVICE_PIXELS / (scale * scale);
    let width = width.ceil().clamp(1.0, MAX_CAPTURE_SIDE.min(area));
    let height = height
        .ceil()
        .clamp(1.0, MAX_CAPTURE_SIDE.min((area / width).floor()));
    (width, height)
}

async fn screenshot(
    page: &Page,
    format: wit::ImageFormat,
    quality: Option<u8>,
    full_page: bool,
    clip: Option<&str>,
    scale: f64,
) -> Result<(Vec<u8>, &'static str), RenderError> {
    let (format, content_type, lossy) = match format {
        wit::ImageFormat::Png => (CaptureScreenshotFormat::Png, "image/png", false),
        wit::ImageFormat::Jpeg => (CaptureScreenshotFormat::Jpeg, "image/jpeg", true),
        wit::ImageFormat::Webp => (CaptureScreenshotFormat::Webp, "image/webp", true),
    };
    let mut params = CaptureScreenshotParams::builder()
        .format(format)
        // Chromium's fastest encoder settings: a bigger PNG, a fraction
        // of the time.
        .optimize_for_speed(true);
    if lossy {
        params = params.quality(i64::from(quality.unwrap_or(80)));
    }
    if let Some(selector) = clip {
        params = params
            .clip(element_box(page, selector, scale).await?)
            .capture_beyond_viewport(true);
    } else if full_page {
        let layout = page
            .execute(GetLayoutMetricsParams::default())
            .await
            .map_err(|e| RenderError::Failed(format!("measuring the page: {e}")))?;
        let size = &layout.result.css_content_size;
        let (width, height) = within_pixels(size.width, size.height, scale);
        params = params
            .clip(Clip {
                x: 0.0,
                y: 0.0,
                width,
                height,
                scale: 1.0,
            })
            .capture_beyond_viewport(true);
    }
    let shot = page
        .execute(params.build())
        .await
        .map_err(|e| RenderError::Failed(format!("taking the screenshot: {e}")))?;
    let image = base64::engine::general_purpose::STANDARD
        .decode(&shot.result.data)
        .map_err(|e| RenderError::Failed(format!("the screenshot's data: {e}")))?;
    Ok((image, content_type))
}

/// The page box of the first element `selector` matches.
async fn element_box(page: &Page, selector: &str, scale: f64) -> Result<Clip, RenderError> {
    let quoted = serde_json::to_string(selector).unwrap_or_default();
    let expression = format!(
        "(() => {{ const e = document.querySelector({quoted}); if (!e) return []; \
         const r = e.getBoundingClientRect(); \
         return [r.x + scrollX, r.y + scrollY, r.width, r.height]; }})()"
    );
    // An empty list when nothing matches (chromiumoxide reads a `null`
    // result as no value at all).
    let rect: Vec<f64> = evaluate(page, &expression)
        .await
        .map_err(|e| bad_selector(e, selector))?;
    match rect[..] {
        [x, y, width, height] if width >= 1.0 && height >= 1.0 => {
            let (width, height) = within_pixels(width, height, scale);
            Ok(Clip {
                x,
                y,
                width,
                height,
                scale: 1.0,
            })
        }
        [_, _, _, _] => Err(RenderError::Invalid(format!(
            "the element '{selector}' has no size to capture"
        ))),
        _ => Err(RenderError::Invalid(format!(
            "no element matches the clip selector '{selector}'"
        ))),
    }
}

fn pdf_params(o: &wit::PdfOptions) -> PrintToPdfParams {
    let headers = o.header_template.is_some() || o.footer_template.is_some();
    // Chromium fills a template left out with its own (the date, the
    // title): an empty one keeps that side blank.
    let template =
        |t: &Option<String>| headers.then(|| t.clone().unwrap_or("<span></span>".into()));
    let inches = |v: Option<f32>, default: f64| Some(v.map_or(default, f64::from));
    PrintToPdfParams {
        landscape: Some(o.landscape),
        print_background: Some(o.print_background),
        display_header_footer: Some(headers),
        header_template: template(&o.header_template),
        footer_template: template(&o.footer_template),
        paper_width: inches(o.paper_width, 8.5),
        paper_height: inches(o.paper_height, 11.0),
        margin_top: inches(o.margin_top, 0.4),
        margin_right: inches(o.margin_right, 0.4),
        margin_bottom: inches(o.margin_bottom, 0.4),
        margin_left: inches(o.margin_left, 0.4),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn captures_are_cut_to_the_pixel_ceiling() {
        assert_eq!(within_pixels(300.0, 3000.0, 1.0), (300.0, 3000.0));
        assert_eq!(within_pixels(0.2, 0.0, 1.0), (1.0, 1.0));
        // A page of 16,384 x 100,000 at scale 2: 2,048 x 2,048 CSS pixels.
        let (w, h) = within_pixels(16_384.0, 100_000.0, 2.0);
        assert!(w * h * 4.0 <= MAX_DEVICE_PIXELS, "{w} x {h}");
        assert_eq!(w, 16_384.0_f64.min(MAX_DEVICE_PIXELS / 4.0));
        // Tall and narrow: the height is cut at Chromium's side.
        assert_eq!(
            within_pixels(800.0, 100_000.0, 1.0),
            (800.0, MAX_CAPTURE_SIDE)
        );
    }
}
