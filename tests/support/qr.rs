//! Reads a QR code picture back, as a phone's camera would.

/// The data of the one QR code in `png`, a PNG picture.
pub fn scan(png: &[u8]) -> String {
    let mut decoder = png::Decoder::new(std::io::Cursor::new(png))
        .read_info()
        .expect("a PNG picture");
    let mut pixels = vec![0; decoder.output_buffer_size().expect("a sane PNG size")];
    let frame = decoder.next_frame(&mut pixels).expect("a PNG frame");
    assert_eq!(
        (frame.color_type, frame.bit_depth),
        (png::ColorType::Grayscale, png::BitDepth::Eight),
        "the QR code is drawn in 8-bit grey"
    );
    let width = frame.width as usize;
    let mut image =
        rqrr::PreparedImage::prepare_from_greyscale(width, frame.height as usize, |x, y| {
            pixels[y * width + x]
        });
    let grids = image.detect_grids();
    assert_eq!(grids.len(), 1, "one QR code in the picture");
    grids[0].decode().expect("a readable QR code").1
}
