//! The `shc:/` numeric encoding of a compact JWS (SMART Health Cards, "Encoding Chunks as QR
//! codes"): every character `c` of the JWS becomes the two decimal digits of `ord(c) - 45`.
//!
//! The base64url alphabet plus `.` spans `-` (45) to `z` (122), so each pair is `00`–`77`.
//! Digits go into a QR code's numeric mode at 3.33 bits each, about 60 % denser than the
//! byte mode the raw JWS would need.

use crate::HealthCodeError;

/// The URI scheme prefix of a single-chunk health card QR payload.
pub const SHC_PREFIX: &str = "shc:/";

const OFFSET: u8 = 45;
const MAX_PAIR: u8 = b'z' - OFFSET;

/// Encodes a compact JWS as `shc:/` followed by its numeric form.
pub fn encode(jws: &str) -> Result<String, HealthCodeError> {
    let mut out = String::with_capacity(SHC_PREFIX.len() + 2 * jws.len());
    out.push_str(SHC_PREFIX);
    for byte in jws.bytes() {
        if !(OFFSET..=b'z').contains(&byte) {
            return Err(HealthCodeError::Malformed(format!(
                "character {:?} cannot be encoded in a shc:/ code",
                char::from(byte)
            )));
        }
        let value = byte - OFFSET;
        out.push(char::from(b'0' + value / 10));
        out.push(char::from(b'0' + value % 10));
    }
    Ok(out)
}

/// Decodes `shc:/digits` back to the compact JWS. Multi-chunk codes (`shc:/1/2/...`,
/// deprecated by SMART Health Cards 1.3) are refused.
pub fn decode(text: &str) -> Result<String, HealthCodeError> {
    let trimmed = text.trim();
    let digits = trimmed
        .get(..SHC_PREFIX.len())
        .filter(|p| p.eq_ignore_ascii_case(SHC_PREFIX))
        .and_then(|_| trimmed.get(SHC_PREFIX.len()..))
        .ok_or_else(|| HealthCodeError::Malformed("the code does not start with shc:/".into()))?;
    if digits.contains('/') {
        return Err(HealthCodeError::Malformed(
            "multi-chunk shc:/ codes are not supported".into(),
        ));
    }
    let bytes = digits.as_bytes();
    if bytes.len() % 2 != 0 {
        return Err(HealthCodeError::Malformed(
            "a shc:/ code has an even number of digits".into(),
        ));
    }
    let mut jws = String::with_capacity(bytes.len() / 2);
    for pair in bytes.chunks_exact(2) {
        let (tens, units) = (pair[0], pair[1]);
        if !tens.is_ascii_digit() || !units.is_ascii_digit() {
            return Err(HealthCodeError::Malformed(
                "a shc:/ code holds only digits".into(),
            ));
        }
        let value = (tens - b'0') * 10 + (units - b'0');
        if value > MAX_PAIR {
            return Err(HealthCodeError::Malformed(format!(
                "digit pair {value} is outside the shc:/ range 00-77"
            )));
        }
        jws.push(char::from(value + OFFSET));
    }
    Ok(jws)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_every_jws_character() {
        let alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.";
        let encoded = encode(alphabet).unwrap();
        assert!(encoded.starts_with("shc:/"));
        assert!(encoded[5..].bytes().all(|b| b.is_ascii_digit()));
        assert_eq!(decode(&encoded).unwrap(), alphabet);
    }

    #[test]
    fn known_values_from_the_specification() {
        // "ey" is how every JWS header starts: 'e' = 101 - 45 = 56, 'y' = 121 - 45 = 76.
        assert_eq!(encode("ey").unwrap(), "shc:/5676");
        assert_eq!(encode("-.z").unwrap(), "shc:/000177");
        assert_eq!(decode("SHC:/5676").unwrap(), "ey");
    }

    #[test]
    fn refuses_what_is_not_a_single_chunk_code() {
        for bad in [
            "",
            "shc:",
            "http://x",
            "shc:/1/2/5676",
            "shc:/567",
            "shc:/56a6",
            "shc:/78",
        ] {
            assert!(decode(bad).is_err(), "{bad}");
        }
        assert!(encode("a b").is_err());
        assert!(encode("é").is_err());
    }
}
