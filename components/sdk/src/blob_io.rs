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
