//! Streaming objects into blob storage.

use crate::blob::{Bucket, ObjectMeta, ObjectWriter, PutOptions};
use crate::http::{CopyError, Response, copy};
use crate::wasi::io::streams::InputStream;

/// Why `put_stream` stored nothing.
#[derive(Debug)]
pub enum PutError {
    /// Blob storage refused: `too-large` past the host's object limit,
    /// `access-denied`, `invalid-input` for a bad key, ...
    Storage(crate::Error),
    /// The source stream failed before its end (a request body cut off).
    Source,
}

impl PutError {
    /// The response for a failed upload: the storage error's status (413
    /// for `too-large`), or 400 when the body did not arrive whole.
    pub fn response(&self) -> Response {
        match self {
            PutError::Storage(e) => Response::from_error(e),
            PutError::Source => Response::error(
                400,
                "body_incomplete",
                "the request body ended before it was complete",
            ),
        }
    }
}

impl From<crate::Error> for PutError {
    fn from(e: crate::Error) -> Self {
        PutError::Storage(e)
    }
}

/// Stores everything `source` yields as the object `key`: the host copies
/// the bytes, so an object of any size passes through a few kilobytes of
/// guest memory. The object is committed only if the whole source arrived;
/// otherwise the upload is discarded and nothing is stored.
pub fn put_stream(
    bucket: &Bucket,
    key: &str,
    options: &PutOptions,
    source: &InputStream,
) -> Result<ObjectMeta, PutError> {
    let writer = bucket.put(key, options)?;
    let sink = writer.body()?;
    let copied = copy(source, &sink);
    drop(sink);
    match copied {
        // Finishing a writer whose stream failed returns the reason (such
        // as `too-large`) and commits nothing.
        Ok(_) | Err(CopyError::Write(_)) => Ok(ObjectWriter::finish(writer)?),
        // Dropping the writer without `finish` discards the upload.
        Err(CopyError::Read(_)) => Err(PutError::Source),
    }
}

/// The headers to serve what a user stored (an upload, a document) with,
/// so that it is inert on this origin: its `content-type` as stored (or
/// `application/octet-stream` if there is none or it is not one media
/// type), `x-content-type-options: nosniff`, and `content-security-policy:
/// sandbox` (no script runs, the document gets an origin of its own).
/// Anything a browser could render as a document with scripts (HTML, SVG,
/// XML, or a type not known to be passive) is also sent as
/// `content-disposition: attachment`: downloaded, never shown in place.
///
/// Without them, an HTML file uploaded anonymously and opened by a
/// signed-in user ran on the site's origin and read the user's documents
/// (the hostile probe). PDFs are left without the sandbox, which would
/// stop the browser's own viewer (it runs them away from this origin).
pub fn user_content_headers(content_type: Option<&str>) -> Vec<(String, Vec<u8>)> {
    let content_type = content_type
        .map(str::trim)
        .filter(|t| is_media_type(t))
        .unwrap_or("application/octet-stream");
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    let mut headers = vec![
        ("content-type".to_string(), content_type.as_bytes().to_vec()),
        ("x-content-type-options".to_string(), b"nosniff".to_vec()),
    ];
    if essence != "application/pdf" {
        headers.push(("content-security-policy".to_string(), b"sandbox".to_vec()));
    }
    if !is_passive(&essence) {
        headers.push(("content-disposition".to_string(), b"attachment".to_vec()));
    }
    headers
}

/// `type/subtype` and parameters, as RFC 9110 writes a media type: one
/// type, no list, no control characters.
fn is_media_type(value: &str) -> bool {
    let token = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
    };
    let essence = value.split(';').next().unwrap_or_default().trim();
    let Some((kind, subtype)) = essence.split_once('/') else {
        return false;
    };
    token(kind)
        && token(subtype)
        && value.len() <= 200
        && !value.contains(',')
        && value
            .bytes()
            .all(|b| b == b' ' || b == b'\t' || b.is_ascii_graphic())
}

/// Types a browser shows without running anything of the page's own when
/// one is opened: media, fonts, plain text and data (a script file opened
/// is text; a script runs only when a page of this origin loads it).
fn is_passive(essence: &str) -> bool {
    let (kind, subtype) = essence.split_once('/').unwrap_or_default();
    match kind {
        "image" => !subtype.contains("svg"),
        "audio" | "video" | "font" => true,
        "text" => matches!(
            subtype,
            "plain" | "csv" | "markdown" | "css" | "javascript" | "x-markdown"
        ),
        "application" => {
            matches!(
                subtype,
                "json"
                    | "pdf"
                    | "octet-stream"
                    | "javascript"
                    | "zip"
                    | "gzip"
                    | "wasm"
                    | "x-ndjson"
            ) || subtype.ends_with("+json")
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get(headers: &[(String, Vec<u8>)], name: &str) -> Option<String> {
        (headers.iter())
            .find(|(k, _)| k == name)
            .map(|(_, v)| String::from_utf8(v.clone()).unwrap())
    }

    #[test]
    fn user_content_is_served_inert() {
        for active in [
            Some("text/html"),
            Some("TEXT/HTML; charset=utf-8"),
            Some("image/svg+xml"),
            Some("application/xhtml+xml"),
            Some("text/xml"),
            Some("application/x-unknown"),
            Some("multipart/x-mixed-replace; boundary=x"),
        ] {
            let h = user_content_headers(active);
            assert_eq!(
                get(&h, "content-disposition").as_deref(),
                Some("attachment"),
                "{active:?}"
            );
            assert_eq!(
                get(&h, "content-security-policy").as_deref(),
                Some("sandbox")
            );
            assert_eq!(
                get(&h, "x-content-type-options").as_deref(),
                Some("nosniff")
            );
            assert_eq!(get(&h, "content-type").as_deref(), active.map(str::trim));
        }
        for passive in [
            "image/png",
            "video/mp4",
            "text/plain; charset=utf-8",
            "application/json",
        ] {
            let h = user_content_headers(Some(passive));
            assert_eq!(get(&h, "content-disposition"), None, "{passive}");
            assert_eq!(
                get(&h, "content-security-policy").as_deref(),
                Some("sandbox")
            );
            assert_eq!(get(&h, "content-type").as_deref(), Some(passive));
        }
        let pdf = user_content_headers(Some("application/pdf"));
        assert_eq!(get(&pdf, "content-security-policy"), None);
        assert_eq!(
            get(&pdf, "x-content-type-options").as_deref(),
            Some("nosniff")
        );
        // No type, or not one media type: bytes to download.
        for odd in [
            None,
            Some("text/html, text/plain"),
            Some("html"),
            Some("text/html\u{7f}"),
        ] {
            let h = user_content_headers(odd);
            assert_eq!(
                get(&h, "content-type").as_deref(),
                Some("application/octet-stream"),
                "{odd:?}"
            );
            assert_eq!(get(&h, "content-disposition"), None);
        }
    }
}
