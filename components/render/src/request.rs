//! A render request as a client writes it, in the query string (`GET`) or
//! a JSON object (`POST`), with the same names either way (Puppeteer's
//! where it has one), checked and turned into the `render` import's
//! records. Unknown names are refused, so that a typo is not silently a
//! default.

use std::collections::BTreeMap;

use serde_json::Value;
use spike_sdk::render::{ImageFormat, Page, PdfOptions, ScreenshotOptions, Source, WaitEvent};

/// What a route renders.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Screenshot,
    Pdf,
    Html,
    /// The old renderer's `GET /?url=…&sleep=…`: a full-page JPEG.
    Legacy,
}

impl Kind {
    /// Its name in telemetry.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Screenshot => "screenshot",
            Kind::Pdf => "pdf",
            Kind::Html => "html",
            Kind::Legacy => "legacy",
        }
    }
}

/// Whether the result may come from, and go to, the cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CachePolicy {
    Use { ttl_s: u64 },
    Bypass,
}

/// A checked request.
pub struct RenderRequest {
    pub kind: Kind,
    pub page: Page,
    pub screenshot: ScreenshotOptions,
    pub pdf: PdfOptions,
    pub cache: CachePolicy,
}

/// Names every route takes.
const COMMON: &[&str] = &[
    "url",
    "html",
    "width",
    "height",
    "deviceScaleFactor",
    "waitUntil",
    "waitForSelector",
    "delay",
    "sleep",
    "timeout",
    "cache",
];
const SCREENSHOT: &[&str] = &["format", "quality", "fullPage", "clip"];
const PDF: &[&str] = &[
    "paper",
    "paperWidth",
    "paperHeight",
    "margin",
    "marginTop",
    "marginRight",
    "marginBottom",
    "marginLeft",
    "landscape",
    "printBackground",
    "headerTemplate",
    "footerTemplate",
];

/// Longest cache lifetime a request may ask for: 30 days.
const MAX_TTL_S: u64 = 30 * 24 * 3600;

type Fields = BTreeMap<String, Value>;

/// The fields of a query string; a name given twice is refused.
pub fn from_query(query: &str) -> Result<Fields, String> {
    let mut fields = Fields::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        let name = spike_sdk::http::percent_decode(&name.replace('+', " "));
        let value = spike_sdk::http::percent_decode(&value.replace('+', " "));
        if fields.insert(name.clone(), Value::String(value)).is_some() {
            return Err(format!("'{name}' is given twice"));
        }
    }
    Ok(fields)
}

/// The fields of a JSON object.
pub fn from_json(body: &[u8]) -> Result<Fields, String> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(map)) => Ok(map.into_iter().collect()),
        Ok(_) => Err("the body must be a JSON object".into()),
        Err(e) => Err(format!("the body is not JSON: {e}")),
    }
}

pub fn parse(kind: Kind, fields: Fields, default_ttl_s: u64) -> Result<RenderRequest, String> {
    let specific: &[&str] = match kind {
        Kind::Screenshot | Kind::Legacy => SCREENSHOT,
        Kind::Pdf => PDF,
        Kind::Html => &[],
    };
    only_known(&fields, specific)?;
    let f = Reader(&fields);
    let source = match (f.string("url")?, f.string("html")?) {
        (Some(url), None) => Source::Url(url),
        (None, Some(html)) if kind != Kind::Legacy => Source::Html(html),
        (None, None) => return Err("give the page's 'url' (or its 'html')".into()),
        _ => return Err("give either 'url' or 'html', not both".into()),
    };
    let wait_until = match f.string("waitUntil")?.as_deref() {
        None | Some("load") => WaitEvent::Load,
        Some("networkidle" | "networkidle0" | "network-idle" | "networkIdle") => {
            WaitEvent::NetworkIdle
        }
        Some(other) => {
            return Err(format!(
                "waitUntil '{other}' is not one of load, networkidle"
            ));
        }
    };
    let delay = match (f.number("delay")?, f.number("sleep")?) {
        (Some(_), Some(_)) => return Err("give either 'delay' or 'sleep', not both".into()),
        (d, s) => d.or(s).unwrap_or(0.0),
    };
    let page = Page {
        source,
        viewport_width: f.whole("width")?.unwrap_or(0),
        viewport_height: f.whole("height")?.unwrap_or(0),
        device_scale_factor: f.number("deviceScaleFactor")?.unwrap_or(0.0) as f32,
        wait_until,
        wait_for_selector: f.string("waitForSelector")?,
        delay_ms: whole("delay", delay)?,
        timeout_ms: f.whole("timeout")?.unwrap_or(0),
    };
    let legacy = kind == Kind::Legacy;
    let screenshot = ScreenshotOptions {
        format: match f.string("format")?.as_deref() {
            None if legacy => ImageFormat::Jpeg,
            None | Some("png") => ImageFormat::Png,
            Some("jpeg" | "jpg") => ImageFormat::Jpeg,
            Some("webp") => ImageFormat::Webp,
            Some(other) => return Err(format!("format '{other}' is not one of png, jpeg, webp")),
        },
        quality: match f.whole("quality")? {
            Some(q) if q > 100 => return Err(format!("quality {q} is over 100")),
            q => q.map(|q| q as u8),
        },
        full_page: f.boolean("fullPage")?.unwrap_or(legacy),
        clip_selector: f.string("clip")?,
    };
    let paper = match f.string("paper")? {
        None => None,
        Some(name) => Some(paper_size(&name)?),
    };
    let margin = f.length("margin")?;
    let side = |name: &str| f.length(name).map(|l| l.or(margin));
    let pdf = PdfOptions {
        paper_width: f.length("paperWidth")?.or(paper.map(|p| p.0)),
        paper_height: f.length("paperHeight")?.or(paper.map(|p| p.1)),
        margin_top: side("marginTop")?,
        margin_right: side("marginRight")?,
        margin_bottom: side("marginBottom")?,
        margin_left: side("marginLeft")?,
        landscape: f.boolean("landscape")?.unwrap_or(false),
        print_background: f.boolean("printBackground")?.unwrap_or(false),
        header_template: f.string("headerTemplate")?,
        footer_template: f.string("footerTemplate")?,
    };
    let cache = cache_policy(f.string_or_number("cache")?.as_deref(), default_ttl_s)?;
    Ok(RenderRequest {
        kind,
        page,
        screenshot,
        pdf,
        cache,
    })
}

/// Refuses an option neither every route nor this kind's takes.
fn only_known(fields: &Fields, specific: &[&str]) -> Result<(), String> {
    let Some(unknown) = fields
        .keys()
        .find(|k| !COMMON.contains(&k.as_str()) && !specific.contains(&k.as_str()))
    else {
        return Ok(());
    };
    let mut known: Vec<&str> = COMMON.iter().chain(specific).copied().collect();
    known.sort_unstable();
    Err(format!(
        "unknown option '{unknown}'; this route takes {}",
        known.join(", ")
    ))
}

/// The `cache` option: a lifetime in seconds (0: none), `no`, or the
/// default.
fn cache_policy(option: Option<&str>, default_ttl_s: u64) -> Result<CachePolicy, String> {
    let cache = match option {
        None => CachePolicy::Use {
            ttl_s: default_ttl_s,
        },
        Some("no" | "off" | "false" | "bypass" | "0") => CachePolicy::Bypass,
        Some(ttl) => match ttl.parse::<u64>() {
            Ok(ttl_s) if ttl_s <= MAX_TTL_S => CachePolicy::Use { ttl_s },
            _ => {
                return Err(format!(
                    "cache '{ttl}' is neither 'no' nor a lifetime in seconds (at most {MAX_TTL_S})"
                ));
            }
        },
    };
    Ok(match cache {
        CachePolicy::Use { ttl_s: 0 } => CachePolicy::Bypass,
        c => c,
    })
}

impl RenderRequest {
    /// The cache key: a hash of everything that shapes the result (the
    /// page, its options, what is taken), not of how the client spelled
    /// it.
    pub fn cache_key(&self) -> String {
        let shape = match self.kind {
            Kind::Screenshot | Kind::Legacy => format!("screenshot {:?}", self.screenshot),
            Kind::Pdf => format!("pdf {:?}", self.pdf),
            Kind::Html => "html".to_string(),
        };
        let page = format!("{:?}", self.page);
        spike_sdk::cache::key("", &[b"render v2", page.as_bytes(), shape.as_bytes()])
    }
}

/// Paper sizes by name, in inches (as Puppeteer names them).
fn paper_size(name: &str) -> Result<(f32, f32), String> {
    Ok(match name.to_ascii_lowercase().as_str() {
        "letter" => (8.5, 11.0),
        "legal" => (8.5, 14.0),
        "tabloid" => (11.0, 17.0),
        "ledger" => (17.0, 11.0),
        "a0" => (33.1, 46.8),
        "a1" => (23.4, 33.1),
        "a2" => (16.54, 23.4),
        "a3" => (11.7, 16.54),
        "a4" => (8.27, 11.7),
        "a5" => (5.83, 8.27),
        "a6" => (4.13, 5.83),
        _ => {
            return Err(format!(
                "paper '{name}' is not one of letter, legal, tabloid, ledger, a0 to a6"
            ));
        }
    })
}

fn whole(name: &str, n: f64) -> Result<u32, String> {
    if n.fract() == 0.0 && (0.0..=u32::MAX as f64).contains(&n) {
        Ok(n as u32)
    } else {
        Err(format!("'{name}' must be a whole number, not {n}"))
    }
}

/// Typed reads of the fields: a query string's values are all text, a JSON
/// body's may be numbers and booleans too.
struct Reader<'a>(&'a Fields);

impl Reader<'_> {
    fn string(&self, name: &str) -> Result<Option<String>, String> {
        match self.0.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(format!("'{name}' must be a string")),
        }
    }

    fn string_or_number(&self, name: &str) -> Result<Option<String>, String> {
        match self.0.get(name) {
            Some(Value::Number(n)) => Ok(Some(n.to_string())),
            Some(Value::Bool(b)) => Ok(Some(b.to_string())),
            _ => self.string(name),
        }
    }

    fn number(&self, name: &str) -> Result<Option<f64>, String> {
        let bad = || format!("'{name}' must be a number");
        match self.0.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Number(n)) => n.as_f64().map(Some).ok_or_else(bad),
            Some(Value::String(s)) => s
                .trim()
                .parse::<f64>()
                .ok()
                .filter(|n| n.is_finite())
                .map(Some)
                .ok_or_else(bad),
            Some(_) => Err(bad()),
        }
    }

    fn whole(&self, name: &str) -> Result<Option<u32>, String> {
        self.number(name)?.map(|n| whole(name, n)).transpose()
    }

    fn boolean(&self, name: &str) -> Result<Option<bool>, String> {
        match self.0.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(Value::String(s)) => match s.as_str() {
                "true" | "1" | "yes" | "" => Ok(Some(true)),
                "false" | "0" | "no" => Ok(Some(false)),
                _ => Err(format!("'{name}' must be true or false, not '{s}'")),
            },
            Some(_) => Err(format!("'{name}' must be true or false")),
        }
    }

    /// A length in inches: a number, or text with a unit (`in`, `cm`,
    /// `mm`, `px` at 96 to the inch), as Puppeteer takes margins.
    fn length(&self, name: &str) -> Result<Option<f32>, String> {
        let text = match self.0.get(name) {
            None | Some(Value::Null) => return Ok(None),
            Some(Value::Number(n)) => n.to_string(),
            Some(Value::String(s)) => s.trim().to_ascii_lowercase(),
            Some(_) => return Err(format!("'{name}' must be a length")),
        };
        let (number, per_inch) = [("in", 1.0), ("cm", 2.54), ("mm", 25.4), ("px", 96.0)]
            .iter()
            .find_map(|(unit, per)| text.strip_suffix(unit).map(|n| (n.trim(), *per)))
            .unwrap_or((text.as_str(), 1.0));
        match number.parse::<f32>() {
            Ok(n) if n.is_finite() && n >= 0.0 => Ok(Some(n / per_inch)),
            _ => Err(format!(
                "'{name}' must be a length such as 0.5, '1cm', '10mm', '0.4in' or '40px'"
            )),
        }
    }
}
