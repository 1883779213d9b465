//! Removing attached credentials from what servers send back.
//!
//! The host attaches credentials so that a plugin never holds one. A server
//! that echoes request headers (`TRACE`, an httpbin-style `/anything`, an
//! error page quoting the request) would hand the credential straight back,
//! and once the plugin has the value no output masking can stop it from
//! sending a transformed copy (hex, reversed, split) elsewhere. So every
//! response header and every byte of every response body is scanned for each
//! credential value the call attached, in each form the host itself
//! produced, and such copies are overwritten before the plugin can read
//! them. Bodies stay streamed: a window of the longest value's length is
//! held back between chunks, so a value split across chunks is still found.
//! Masks keep the length (`*` per byte), so `Content-Length` stays true.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use aho_corasick::{AhoCorasick, AhoCorasickBuilder, MatchKind};
use bytes::{Bytes, BytesMut};
use http::{HeaderMap, HeaderValue};
use http_body::{Body, Frame};

/// The byte a credential's bytes are overwritten with.
const MASK_BYTE: u8 = b'*';
/// Values shorter than this are not scanned for (they would shred bodies,
/// and such a credential protects nothing anyway).
const MIN_LEN: usize = 4;

/// Every form of every credential value one call attached.
pub(crate) struct Scrubber {
    finder: AhoCorasick,
    longest: usize,
}

impl Scrubber {
    /// A scrubber for these values, or `None` when there is nothing to find.
    pub fn new(values: &[String]) -> Option<Self> {
        let values: Vec<&[u8]> = values
            .iter()
            .map(|v| v.as_bytes())
            .filter(|v| v.len() >= MIN_LEN)
            .collect();
        let longest = values.iter().map(|v| v.len()).max()?;
        // Case-blind: some servers fold the case of what they echo.
        let finder = AhoCorasickBuilder::new()
            .match_kind(MatchKind::LeftmostLongest)
            .ascii_case_insensitive(true)
            .build(&values)
            .expect("literal patterns always build");
        Some(Self { finder, longest })
    }

    /// Overwrite every occurrence in `buf`; how many were found.
    pub fn mask(&self, buf: &mut [u8]) -> usize {
        let found: Vec<_> = self.finder.find_iter(&*buf).map(|m| m.range()).collect();
        for range in &found {
            buf[range.clone()].fill(MASK_BYTE);
        }
        found.len()
    }

    /// Mask every header value; how many were found.
    pub fn mask_headers(&self, headers: &mut HeaderMap) -> usize {
        let mut n = 0;
        for value in headers.values_mut() {
            let mut bytes = value.as_bytes().to_vec();
            let hits = self.mask(&mut bytes);
            if hits > 0 {
                n += hits;
                // Only bytes a header value already had, or `*`: still valid.
                *value = HeaderValue::from_bytes(&bytes).expect("masked header stays valid");
            }
        }
        n
    }
}

/// A response body with every credential value masked as it streams.
pub(crate) struct ScrubBody<B> {
    inner: B,
    /// `None` when the call attached no credential: bytes pass as they are.
    scrubber: Option<Arc<Scrubber>>,
    /// Bytes held back: they may begin a value the next chunk completes.
    held: BytesMut,
    /// Trailers that arrived while bytes were held: sent after them.
    trailers: Option<HeaderMap>,
    done: bool,
    /// Released when the body ends or is dropped (the in-flight slot).
    guard: Option<Box<dyn Send + Sync>>,
}

impl<B> ScrubBody<B> {
    pub fn new(inner: B, scrubber: Option<Arc<Scrubber>>, guard: Box<dyn Send + Sync>) -> Self {
        Self {
            inner,
            scrubber,
            held: BytesMut::new(),
            trailers: None,
            done: false,
            guard: Some(guard),
        }
    }

    /// The inner body has ended: let out what is held, then the trailers.
    fn finish(&mut self) -> Option<Frame<Bytes>> {
        self.guard = None;
        if !self.held.is_empty() {
            return Some(Frame::data(std::mem::take(&mut self.held).freeze()));
        }
        self.done = true;
        self.trailers.take().map(Frame::trailers)
    }
}

impl<B> Body for ScrubBody<B>
where
    B: Body<Data = Bytes> + Unpin,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let this = &mut *self;
        if this.done {
            return Poll::Ready(None);
        }
        if this.trailers.is_some() {
            return Poll::Ready(this.finish().map(Ok));
        }
        loop {
            match Pin::new(&mut this.inner).poll_frame(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(e))),
                Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                    Ok(data) => {
                        let Some(scrubber) = &this.scrubber else {
                            return Poll::Ready(Some(Ok(Frame::data(data))));
                        };
                        this.held.extend_from_slice(&data);
                        scrubber.mask(&mut this.held);
                        // A value starting in the part let out would have
                        // ended within `held`, so it was found: only the
                        // last `longest - 1` bytes can start an unfinished one.
                        let keep = scrubber.longest.saturating_sub(1);
                        if this.held.len() > keep {
                            let out = this.held.split_to(this.held.len() - keep);
                            return Poll::Ready(Some(Ok(Frame::data(out.freeze()))));
                        }
                    }
                    Err(frame) => {
                        // Trailers end a body.
                        if let Ok(mut trailers) = frame.into_trailers() {
                            if let Some(s) = &this.scrubber {
                                s.mask_headers(&mut trailers);
                            }
                            this.trailers = Some(trailers);
                        }
                        return Poll::Ready(this.finish().map(Ok));
                    }
                },
                Poll::Ready(None) => return Poll::Ready(this.finish().map(Ok)),
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;

    use super::*;
    use http_body_util::BodyExt;

    fn scrubber() -> Arc<Scrubber> {
        Arc::new(Scrubber::new(&["Bearer s3cret-token".into(), "s3cret-token".into()]).unwrap())
    }

    /// A body that yields the given chunks, then trailers.
    struct Chunks(VecDeque<Frame<Bytes>>);

    impl Body for Chunks {
        type Data = Bytes;
        type Error = std::convert::Infallible;
        fn poll_frame(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
            Poll::Ready(self.0.pop_front().map(Ok))
        }
    }

    #[tokio::test]
    async fn a_value_split_across_chunks_is_masked_and_the_length_kept() {
        let text = r#"{"headers":{"Authorization":"Bearer s3cret-token"},"again":"S3CRET-TOKEN"}"#;
        for size in 1..=text.len() {
            let mut frames: VecDeque<Frame<Bytes>> = text
                .as_bytes()
                .chunks(size)
                .map(|c| Frame::data(Bytes::copy_from_slice(c)))
                .collect();
            let mut trailers = HeaderMap::new();
            trailers.insert("x-t", HeaderValue::from_static("s3cret-token"));
            frames.push_back(Frame::trailers(trailers));
            let body = ScrubBody::new(Chunks(frames), Some(scrubber()), Box::new(()));
            let collected = body.collect().await.unwrap();
            assert_eq!(collected.trailers().unwrap()["x-t"], "************");
            let out = String::from_utf8(collected.to_bytes().to_vec()).unwrap();
            assert_eq!(out.len(), text.len());
            assert!(
                !out.to_lowercase().contains("s3cret"),
                "chunk {size}: {out}"
            );
            assert!(
                out.contains(r#""Authorization":"*******************""#),
                "{out}"
            );
        }
    }

    #[test]
    fn header_values_are_masked() {
        let mut h = HeaderMap::new();
        h.insert("x-echo", HeaderValue::from_static("got s3cret-token here"));
        assert_eq!(scrubber().mask_headers(&mut h), 1);
        assert_eq!(h["x-echo"], "got ************ here");
    }
}
