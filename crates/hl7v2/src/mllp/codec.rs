//! MLLP framing as a tokio-util codec.

use bytes::{Buf, BufMut, BytesMut};
use tokio_util::codec::{Decoder, Encoder};

use super::MllpError;

/// Start-of-block byte (VT).
pub const START_BLOCK: u8 = 0x0B;
/// End-of-block byte (FS); a CR follows it on the wire.
pub const END_BLOCK: u8 = 0x1C;
const CARRIAGE_RETURN: u8 = 0x0D;

/// Splits a byte stream into MLLP frames and wraps outgoing messages in frames.
///
/// Tolerant of what real networks and senders do: a frame split across many reads, several
/// frames in one read, and bytes between frames (the CR after the end block, keep-alive
/// newlines, stray garbage) are skipped. A frame that grows past `max_frame` bytes without
/// an end block is an error, so a peer cannot make the receiver buffer without bound.
#[derive(Debug, Clone)]
pub struct MllpCodec {
    max_frame: usize,
    in_frame: bool,
    /// How far into the current frame has already been searched for the end block, so split
    /// reads do not rescan the buffer (which would be quadratic in the frame size).
    scanned: usize,
}

impl MllpCodec {
    /// A codec accepting frames of at most `max_frame` bytes.
    pub fn new(max_frame: usize) -> Self {
        Self {
            max_frame,
            in_frame: false,
            scanned: 0,
        }
    }
}

impl Decoder for MllpCodec {
    type Item = BytesMut;
    type Error = MllpError;

    fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<BytesMut>, MllpError> {
        if !self.in_frame {
            match buf.iter().position(|&b| b == START_BLOCK) {
                Some(start) => {
                    log_junk(&buf[..start]);
                    buf.advance(start + 1);
                    self.in_frame = true;
                    self.scanned = 0;
                }
                None => {
                    log_junk(buf);
                    buf.clear();
                    return Ok(None);
                }
            }
        }
        match buf[self.scanned..].iter().position(|&b| b == END_BLOCK) {
            Some(offset) => {
                let end = self.scanned + offset;
                if end > self.max_frame {
                    return Err(MllpError::FrameTooLarge {
                        limit: self.max_frame,
                    });
                }
                let frame = buf.split_to(end);
                buf.advance(1);
                self.in_frame = false;
                self.scanned = 0;
                Ok(Some(frame))
            }
            None => {
                self.scanned = buf.len();
                if buf.len() > self.max_frame {
                    return Err(MllpError::FrameTooLarge {
                        limit: self.max_frame,
                    });
                }
                Ok(None)
            }
        }
    }
}

impl Encoder<&[u8]> for MllpCodec {
    type Error = MllpError;

    fn encode(&mut self, message: &[u8], out: &mut BytesMut) -> Result<(), MllpError> {
        out.reserve(message.len() + 3);
        out.put_u8(START_BLOCK);
        out.put_slice(message);
        out.put_u8(END_BLOCK);
        out.put_u8(CARRIAGE_RETURN);
        Ok(())
    }
}

fn log_junk(bytes: &[u8]) {
    let junk = bytes.iter().filter(|b| !b.is_ascii_whitespace()).count();
    if junk > 0 {
        tracing::warn!(bytes = junk, "discarding bytes outside an MLLP frame");
    }
}

/// Wraps one message in an MLLP frame.
pub fn frame(message: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(message.len() + 3);
    out.push(START_BLOCK);
    out.extend_from_slice(message);
    out.extend_from_slice(&[END_BLOCK, CARRIAGE_RETURN]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_all(codec: &mut MllpCodec, buf: &mut BytesMut) -> Vec<Vec<u8>> {
        let mut frames = Vec::new();
        while let Some(frame) = codec.decode(buf).unwrap() {
            frames.push(frame.to_vec());
        }
        frames
    }

    #[test]
    fn split_reads_and_several_frames_per_read() {
        let mut wire = frame(b"first");
        wire.extend(b"\r\n  ");
        wire.extend(frame(b"second"));
        wire.extend(frame(b""));
        // Feed one byte at a time, then all at once: same frames.
        let mut codec = MllpCodec::new(1024);
        let mut buf = BytesMut::new();
        let mut frames = Vec::new();
        for &b in &wire {
            buf.put_u8(b);
            frames.extend(decode_all(&mut codec, &mut buf));
        }
        let expected: Vec<Vec<u8>> = vec![b"first".to_vec(), b"second".to_vec(), vec![]];
        assert_eq!(frames, expected);
        let mut buf = BytesMut::from(&wire[..]);
        assert_eq!(decode_all(&mut MllpCodec::new(1024), &mut buf), expected);
    }

    #[test]
    fn garbage_between_frames_is_skipped() {
        let mut wire = b"noise".to_vec();
        wire.extend(frame(b"msg"));
        let mut buf = BytesMut::from(&wire[..]);
        assert_eq!(
            decode_all(&mut MllpCodec::new(1024), &mut buf),
            vec![b"msg".to_vec()]
        );
    }

    #[test]
    fn oversize_frames_fail_before_buffering_everything() {
        let mut codec = MllpCodec::new(8);
        let mut buf = BytesMut::from(&[START_BLOCK, b'a', b'b', b'c'][..]);
        assert!(codec.decode(&mut buf).unwrap().is_none());
        buf.put_slice(b"defghij");
        assert!(matches!(
            codec.decode(&mut buf),
            Err(MllpError::FrameTooLarge { limit: 8 })
        ));
        let mut buf = BytesMut::from(&frame(b"123456789")[..]);
        assert!(MllpCodec::new(8).decode(&mut buf).is_err());
        let mut buf = BytesMut::from(&frame(b"12345678")[..]);
        assert!(MllpCodec::new(8).decode(&mut buf).unwrap().is_some());
    }

    #[test]
    fn encoder_writes_a_frame() {
        let mut out = BytesMut::new();
        MllpCodec::new(8).encode(&b"x"[..], &mut out).unwrap();
        assert_eq!(&out[..], &[START_BLOCK, b'x', END_BLOCK, CARRIAGE_RETURN]);
    }
}
