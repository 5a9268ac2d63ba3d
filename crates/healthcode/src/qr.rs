//! QR rendering (PNG, SVG) and decoding of `shc:/` codes.
//!
//! The QR code is built as SMART Health Cards prescribes: two segments, `shc:/` in byte mode
//! and the digits in numeric mode, in the smallest version that fits, at most version 22.
//! Error correction is M when it fits in version 22 (more robust on a scratched or glaring
//! phone screen), else L.
//!
//! Rendering needs no image stack: the module matrix is written as an 8-bit greyscale PNG
//! with the `png` crate, or as SVG by `qrcode`'s own renderer. Decoding (for scanners, the
//! CLI and tests) reads a PNG with `png` and locates and reads the code with `rqrr`.

use std::io::Cursor;

use qrcode::bits::Bits;
use qrcode::{Color, EcLevel, QrCode, Version};

use crate::{numeric::SHC_PREFIX, HealthCodeError};

/// The largest QR version SMART Health Cards allows for one chunk.
pub const MAX_VERSION: i16 = 22;
/// Light modules around the code (the QR specification's minimum quiet zone).
const QUIET_ZONE: usize = 4;
/// Largest PNG accepted for decoding, in pixels: a phone photo, not a poster.
const MAX_DECODE_PIXELS: u64 = 40_000_000;

/// The QR code of a `shc:/` payload.
pub fn qr_code(shc: &str) -> Result<QrCode, HealthCodeError> {
    let digits = shc
        .strip_prefix(SHC_PREFIX)
        .filter(|d| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit()))
        .ok_or_else(|| HealthCodeError::Malformed("expected shc:/ followed by digits".into()))?;
    for ec in [EcLevel::M, EcLevel::L] {
        for version in 1..=MAX_VERSION {
            let mut bits = Bits::new(Version::Normal(version));
            let pushed = bits
                .push_byte_data(SHC_PREFIX.as_bytes())
                .and_then(|()| bits.push_numeric_data(digits.as_bytes()))
                .and_then(|()| bits.push_terminator(ec));
            if pushed.is_ok() {
                return QrCode::with_bits(bits, ec)
                    .map_err(|e| HealthCodeError::Render(e.to_string()));
            }
        }
    }
    Err(HealthCodeError::TooLarge(format!(
        "{} digits do not fit in QR version {MAX_VERSION}",
        digits.len()
    )))
}

/// A PNG of the code, `module_pixels` pixels per module (at least 1), with a quiet zone.
pub fn render_png(shc: &str, module_pixels: u32) -> Result<Vec<u8>, HealthCodeError> {
    let code = qr_code(shc)?;
    let scale = module_pixels.clamp(1, 64) as usize;
    let modules = code.width();
    let colors = code.to_colors();
    let side = (modules + 2 * QUIET_ZONE) * scale;
    let mut pixels = vec![255u8; side * side];
    for (index, color) in colors.iter().enumerate() {
        if *color != Color::Dark {
            continue;
        }
        let (x, y) = (index % modules + QUIET_ZONE, index / modules + QUIET_ZONE);
        for row in y * scale..(y + 1) * scale {
            let start = row * side + x * scale;
            pixels[start..start + scale].fill(0);
        }
    }
    let side_u32 =
        u32::try_from(side).map_err(|_| HealthCodeError::Render("image too large".into()))?;
    let mut out = Vec::new();
    let mut encoder = png::Encoder::new(&mut out, side_u32, side_u32);
    encoder.set_color(png::ColorType::Grayscale);
    encoder.set_depth(png::BitDepth::Eight);
    let mut writer = encoder
        .write_header()
        .map_err(|e| HealthCodeError::Render(e.to_string()))?;
    writer
        .write_image_data(&pixels)
        .and_then(|()| writer.finish())
        .map_err(|e| HealthCodeError::Render(e.to_string()))?;
    Ok(out)
}

/// An SVG of the code (scalable; `viewBox` in modules, quiet zone included).
pub fn render_svg(shc: &str) -> Result<String, HealthCodeError> {
    let code = qr_code(shc)?;
    Ok(code
        .render::<qrcode::render::svg::Color>()
        .quiet_zone(true)
        .module_dimensions(8, 8)
        .dark_color(qrcode::render::svg::Color("#000000"))
        .light_color(qrcode::render::svg::Color("#ffffff"))
        .build())
}

/// Reads the `shc:/` payload of the first QR code found in a PNG.
pub fn decode_png(png_bytes: &[u8]) -> Result<String, HealthCodeError> {
    let bad = |e: png::DecodingError| HealthCodeError::Malformed(format!("PNG: {e}"));
    let mut decoder = png::Decoder::new(Cursor::new(png_bytes));
    decoder.set_transformations(png::Transformations::EXPAND | png::Transformations::STRIP_16);
    let mut reader = decoder.read_info().map_err(bad)?;
    let (width, height) = {
        let info = reader.info();
        (info.width, info.height)
    };
    if u64::from(width) * u64::from(height) > MAX_DECODE_PIXELS {
        return Err(HealthCodeError::Malformed("the image is too large".into()));
    }
    let size = reader
        .output_buffer_size()
        .ok_or_else(|| HealthCodeError::Malformed("the image is too large".into()))?;
    let mut buffer = vec![0u8; size];
    let frame = reader.next_frame(&mut buffer).map_err(bad)?;
    let channels = frame.color_type.samples();
    let stride = frame.line_size;
    let luma = |x: usize, y: usize| -> u8 {
        let at = y * stride + x * channels;
        let px = &buffer[at..at + channels];
        let grey = match channels {
            1 | 2 => u32::from(px[0]),
            _ => (u32::from(px[0]) * 299 + u32::from(px[1]) * 587 + u32::from(px[2]) * 114) / 1000,
        };
        // Transparent pixels are paper.
        match channels {
            2 => 255 - ((255 - grey) * u32::from(px[1]) / 255) as u8,
            4 => 255 - ((255 - grey) * u32::from(px[3]) / 255) as u8,
            _ => grey as u8,
        }
    };
    let mut image = rqrr::PreparedImage::prepare_from_greyscale(
        frame.width as usize,
        frame.height as usize,
        luma,
    );
    let grids = image.detect_grids();
    let mut last_error = "no QR code found in the image".to_owned();
    for grid in grids {
        match grid.decode() {
            Ok((_, content)) => return Ok(content),
            Err(e) => last_error = format!("the QR code cannot be read: {e}"),
        }
    }
    Err(HealthCodeError::Malformed(last_error))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_version_and_error_correction() {
        let shc = format!("shc:/{}", "5676".repeat(300));
        let code = qr_code(&shc).unwrap();
        assert!(matches!(code.version(), Version::Normal(v) if v <= MAX_VERSION));
        assert_eq!(code.error_correction_level(), EcLevel::M);
        // Past what M holds in version 22, L takes over; past L, refused.
        let bigger = format!("shc:/{}", "56".repeat(1100));
        assert_eq!(
            qr_code(&bigger).unwrap().error_correction_level(),
            EcLevel::L
        );
        let huge = format!("shc:/{}", "56".repeat(1300));
        assert!(matches!(qr_code(&huge), Err(HealthCodeError::TooLarge(_))));
        assert!(qr_code("shc:/12a").is_err());
        assert!(qr_code("hello").is_err());
    }

    #[test]
    fn png_and_svg_round_trip() {
        let shc = format!("shc:/{}", "0123456789".repeat(90));
        let png_bytes = render_png(&shc, 3).unwrap();
        assert_eq!(&png_bytes[..8], b"\x89PNG\r\n\x1a\n");
        assert_eq!(decode_png(&png_bytes).unwrap(), shc);
        let svg = render_svg(&shc).unwrap();
        assert!(svg.contains("<svg") && svg.contains("#000000"));
        assert!(decode_png(b"not a png").is_err());
    }
}
