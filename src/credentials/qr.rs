//! QR codes for authenticator apps: the `otpauth://` URI as a PNG data URL
//! that a page shows as `<img src=...>`.

use anyhow::Context as _;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use qrcode::{Color, EcLevel, QrCode};

/// Pixels per module: about 250 px for a TOTP URI, sharp at any zoom a
/// phone camera needs.
const MODULE_PX: usize = 6;
/// White modules around the code, as the standard asks (ISO/IEC 18004: 4).
const QUIET_ZONE: usize = 4;

/// `text` as a QR code (error correction M), a grayscale PNG in a
/// `data:image/png;base64,` URL.
pub fn png_data_url(text: &str) -> anyhow::Result<String> {
    let code = QrCode::with_error_correction_level(text, EcLevel::M)
        .context("the text does not fit in a QR code")?;
    let modules = code.width();
    let colors = code.to_colors();
    let side = (modules + 2 * QUIET_ZONE) * MODULE_PX;
    let mut pixels = vec![u8::MAX; side * side];
    for (index, color) in colors.iter().enumerate() {
        if *color != Color::Dark {
            continue;
        }
        let (x, y) = (index % modules + QUIET_ZONE, index / modules + QUIET_ZONE);
        for row in y * MODULE_PX..(y + 1) * MODULE_PX {
            let start = row * side + x * MODULE_PX;
            pixels[start..start + MODULE_PX].fill(0);
        }
    }
    let side = u32::try_from(side).context("a QR code that large")?;
    let mut png = Vec::new();
    let mut encoder = png::Encoder::new(&mut png, side, side);
    encoder.set_color(png::ColorType::Grayscale);
    encoder.set_depth(png::BitDepth::Eight);
    let mut writer = encoder.write_header().context("a PNG header")?;
    writer
        .write_image_data(&pixels)
        .context("the PNG's pixels")?;
    writer.finish().context("the PNG's end")?;
    Ok(format!("data:image/png;base64,{}", STANDARD.encode(png)))
}
