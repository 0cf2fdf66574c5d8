//! QR codes for login steps that show one. A client of the provisioning
//! API draws a `qr` step's data itself; the management room is a chat, so
//! the bot sends the code as a picture.

use anyhow::Context;
use qrcode::{Color, EcLevel, QrCode};

/// Pixels per module: a phone camera reads the code from a chat's
/// thumbnail, and a 60-character link still makes a picture under 400 px.
const MODULE_PX: usize = 8;
/// The light border the QR specification asks for, in modules.
const QUIET_ZONE: usize = 4;

/// A QR code drawn as a greyscale PNG.
pub(super) struct QrPicture {
    pub(super) png: Vec<u8>,
    /// Its width and height, in pixels.
    pub(super) side: u32,
}

/// The most data drawn. A plugin chooses a step's data; more than this
/// makes a code too dense to scan from a chat, and the encoder would work
/// through all of it before saying it does not fit.
const MAX_DATA: usize = 1024;

/// Draws `data` as a QR code. Fails for data over [`MAX_DATA`] bytes.
pub(super) fn draw(data: &str) -> anyhow::Result<QrPicture> {
    anyhow::ensure!(
        data.len() <= MAX_DATA,
        "{} bytes are too many for a QR code in a chat (at most {MAX_DATA})",
        data.len()
    );
    let code = QrCode::with_error_correction_level(data.as_bytes(), EcLevel::M)
        .context("the data does not fit in a QR code")?;
    let modules = code.width();
    let side = (modules + 2 * QUIET_ZONE) * MODULE_PX;
    let colors = code.to_colors();
    let mut pixels = vec![u8::MAX; side * side];
    for (index, color) in colors.iter().enumerate() {
        if *color == Color::Light {
            continue;
        }
        let (row, column) = (index / modules + QUIET_ZONE, index % modules + QUIET_ZONE);
        for y in row * MODULE_PX..(row + 1) * MODULE_PX {
            pixels[y * side + column * MODULE_PX..y * side + (column + 1) * MODULE_PX].fill(0);
        }
    }
    let side = u32::try_from(side).context("the QR code is too large")?;
    let mut png = Vec::new();
    let mut encoder = png::Encoder::new(&mut png, side, side);
    encoder.set_color(png::ColorType::Grayscale);
    encoder.set_depth(png::BitDepth::Eight);
    encoder
        .write_header()
        .and_then(|mut writer| writer.write_image_data(&pixels))
        .context("failed to encode the QR code as PNG")?;
    Ok(QrPicture { png, side })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reads the picture back as a phone's camera would.
    fn scan(picture: &QrPicture) -> String {
        let mut decoder = png::Decoder::new(std::io::Cursor::new(&picture.png))
            .read_info()
            .unwrap();
        let mut pixels = vec![0; decoder.output_buffer_size().unwrap()];
        let frame = decoder.next_frame(&mut pixels).unwrap();
        assert_eq!((frame.width, frame.height), (picture.side, picture.side));
        assert_eq!(frame.bit_depth, png::BitDepth::Eight);
        let width = frame.width as usize;
        let mut image =
            rqrr::PreparedImage::prepare_from_greyscale(width, frame.height as usize, |x, y| {
                pixels[y * width + x]
            });
        let grids = image.detect_grids();
        assert_eq!(grids.len(), 1);
        grids[0].decode().unwrap().1
    }

    #[test]
    fn a_drawn_login_link_scans_back_to_the_same_link() {
        let link = "https://bridge.example.org/login/8YvBq3k1Jf0Xw2m5nT7rLs9aPd4cEh6uGiKoMzQxVyU";
        let picture = draw(link).unwrap();
        assert_eq!(scan(&picture), link);
        assert!(picture.side < 512, "{}", picture.side);
    }

    #[test]
    fn data_too_long_to_scan_from_a_chat_is_an_error_not_a_panic() {
        assert!(draw(&"x".repeat(MAX_DATA)).is_ok());
        assert!(draw(&"x".repeat(MAX_DATA + 1)).is_err());
        assert!(draw(&"x".repeat(5_000_000)).is_err());
    }
}
