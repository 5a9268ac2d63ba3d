//! Small helpers shared by the modules: base64url, randomness, clock.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use std::time::{SystemTime, UNIX_EPOCH};

/// base64url without padding (RFC 7515 §2), the only encoding JOSE allows.
pub(crate) fn b64u_encode(bytes: impl AsRef<[u8]>) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Strict base64url decoding: padding and non-alphabet characters are rejected, so one token
/// has exactly one textual form.
pub(crate) fn b64u_decode(text: &str) -> Option<Vec<u8>> {
    URL_SAFE_NO_PAD.decode(text).ok()
}

/// Fill `buf` from the operating system's CSPRNG.
///
/// Failure here means the OS has no entropy source; nothing sensible can continue, but we still
/// return an error rather than panic so that callers can report it.
pub(crate) fn random_bytes(buf: &mut [u8]) -> Result<(), getrandom::Error> {
    getrandom::fill(buf)
}

/// Seconds since the Unix epoch (the JWT `NumericDate`). A clock before 1970 reads as 0.
pub(crate) fn now_unix() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// Lower-case hex.
pub(crate) fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// A fresh random identifier (128 bits, base64url), used for `jti` and key ids.
pub(crate) fn random_id() -> Result<String, getrandom::Error> {
    let mut b = [0u8; 16];
    random_bytes(&mut b)?;
    Ok(b64u_encode(b))
}

#[cfg(test)]
pub(crate) fn unhex(s: &str) -> Vec<u8> {
    let s: String = s.chars().filter(|c| !c.is_whitespace()).collect();
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("test hex"))
        .collect()
}
