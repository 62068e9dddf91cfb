//! Readers between a downloaded layer blob and the tar parser: decompression and the diff-ID hash.

use std::io::{self, BufRead, Read};

use ruzstd::decoding::errors::{FrameDecoderError, ReadFrameHeaderError};
use ruzstd::decoding::{BlockDecodingStrategy, FrameDecoder};
use sha2::{Digest, Sha256};

/// How a layer blob is compressed, from its media type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Compression {
    /// A plain tar stream.
    None,
    /// gzip (one or more members).
    Gzip,
    /// zstd (one or more frames, skippable frames ignored).
    Zstd,
}

impl Compression {
    /// The compression of a layer media type, or `None` for media types that are not image layers we
    /// can fetch (foreign/non-distributable layers live at URLs outside the registry).
    pub(crate) fn of_media_type(media_type: &str) -> Option<Compression> {
        match media_type {
            "application/vnd.oci.image.layer.v1.tar" | "application/vnd.docker.image.rootfs.diff.tar" => {
                Some(Compression::None)
            }
            "application/vnd.oci.image.layer.v1.tar+gzip" | "application/vnd.docker.image.rootfs.diff.tar.gzip" => {
                Some(Compression::Gzip)
            }
            "application/vnd.oci.image.layer.v1.tar+zstd" => Some(Compression::Zstd),
            _ => None,
        }
    }

    /// Wraps `src` in the matching decompressor.
    pub(crate) fn reader<'a, R: BufRead + 'a>(self, src: R) -> Box<dyn Read + 'a> {
        match self {
            Compression::None => Box::new(src),
            // Multi-member: some tools (pigz-style parallel compressors) write several gzip members.
            Compression::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(src)),
            Compression::Zstd => Box::new(ZstdFrames { src, dec: FrameDecoder::new(), active: false }),
        }
    }
}

/// A zstd reader over every frame of the stream. ruzstd's own streaming decoder stops after one
/// frame, while zstd layers may hold several (and `zstd:chunked` adds skippable metadata frames).
struct ZstdFrames<R> {
    src: R,
    dec: FrameDecoder,
    /// A frame has been started and may still yield bytes.
    active: bool,
}

impl<R: BufRead> Read for ZstdFrames<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        loop {
            if self.active {
                if self.dec.is_finished() && self.dec.can_collect() == 0 {
                    self.active = false;
                    continue;
                }
                while self.dec.can_collect() < buf.len() && !self.dec.is_finished() {
                    let wanted = buf.len() - self.dec.can_collect();
                    self.dec
                        .decode_blocks(&mut self.src, BlockDecodingStrategy::UptoBytes(wanted))
                        .map_err(io::Error::other)?;
                }
                let n = self.dec.read(buf)?;
                if n > 0 {
                    return Ok(n);
                }
                self.active = false;
                continue;
            }
            if self.src.fill_buf()?.is_empty() {
                return Ok(0);
            }
            match self.dec.init(&mut self.src) {
                Ok(()) => self.active = true,
                Err(FrameDecoderError::ReadFrameHeaderError(ReadFrameHeaderError::SkipFrame { length, .. })) => {
                    let skipped = io::copy(&mut (&mut self.src).take(u64::from(length)), &mut io::sink())?;
                    if skipped != u64::from(length) {
                        return Err(io::ErrorKind::UnexpectedEof.into());
                    }
                }
                Err(e) => return Err(io::Error::other(e)),
            }
        }
    }
}

/// Passes bytes through while hashing them, so the uncompressed stream can be checked against the
/// config's `rootfs.diff_ids` without a second pass.
pub(crate) struct HashingReader<R> {
    inner: R,
    hasher: Sha256,
}

impl<R: Read> HashingReader<R> {
    pub(crate) fn new(inner: R) -> Self {
        HashingReader { inner, hasher: Sha256::new() }
    }

    /// Reads what the consumer left (tar padding after the end-of-archive blocks) and returns the
    /// `sha256:<hex>` digest of the whole stream.
    pub(crate) fn finish(mut self) -> io::Result<String> {
        io::copy(&mut self, &mut io::sink())?;
        Ok(format!("sha256:{}", hex(&self.hasher.finalize())))
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes.iter().fold(String::with_capacity(64), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::io::Read;

    use ruzstd::encoding::{compress_to_vec, CompressionLevel};

    use super::Compression;

    #[test]
    fn zstd_reads_every_frame_and_skips_skippable_ones() {
        let one = vec![b'a'; 200_000];
        let two = b"second frame".to_vec();
        let mut stream = compress_to_vec(&one[..], CompressionLevel::Fastest);
        // A skippable frame (magic 0x184D2A50..5F, little-endian length, payload), as zstd:chunked writes.
        stream.extend_from_slice(&0x184D_2A50u32.to_le_bytes());
        stream.extend_from_slice(&4u32.to_le_bytes());
        stream.extend_from_slice(b"meta");
        stream.extend(compress_to_vec(&two[..], CompressionLevel::Fastest));

        let mut out = Vec::new();
        Compression::Zstd.reader(&stream[..]).read_to_end(&mut out).unwrap();
        assert_eq!(out, [one, two].concat());
    }
}
