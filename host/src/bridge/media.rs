//! Files both ways: what a Matrix file message holds, and the Matrix
//! content of a remote attachment.
//!
//! Captions follow Matrix 1.10: when a file message has a `filename`
//! different from its `body`, the body is a caption.

use ruma::OwnedMxcUri;
use ruma::events::room::MediaSource;
use ruma::events::room::message::MessageType;
use serde_json::{Value, json};
use weft_runtime::events::{Attachment, MediaKind};

/// A file sent on Matrix.
#[derive(Debug, Clone)]
pub(super) struct MatrixFile {
    /// Its name.
    pub name: String,
    /// Where it is.
    pub source: MediaSource,
    /// Its MIME type, as the sender's client said.
    pub mime_type: Option<String>,
    /// Its size, as the sender's client said.
    pub size: Option<u64>,
    /// Text sent with it.
    pub caption: Option<String>,
}

/// The file of a Matrix message, if it is a file message.
pub(super) fn file_of(msgtype: &MessageType) -> Option<MatrixFile> {
    let (body, filename, source, mime_type, size) = match msgtype {
        MessageType::Image(c) => (
            &c.body,
            &c.filename,
            &c.source,
            c.info.as_ref().and_then(|i| i.mimetype.clone()),
            c.info.as_ref().and_then(|i| i.size),
        ),
        MessageType::File(c) => (
            &c.body,
            &c.filename,
            &c.source,
            c.info.as_ref().and_then(|i| i.mimetype.clone()),
            c.info.as_ref().and_then(|i| i.size),
        ),
        MessageType::Video(c) => (
            &c.body,
            &c.filename,
            &c.source,
            c.info.as_ref().and_then(|i| i.mimetype.clone()),
            c.info.as_ref().and_then(|i| i.size),
        ),
        MessageType::Audio(c) => (
            &c.body,
            &c.filename,
            &c.source,
            c.info.as_ref().and_then(|i| i.mimetype.clone()),
            c.info.as_ref().and_then(|i| i.size),
        ),
        _ => return None,
    };
    let (name, caption) = match filename {
        Some(name) if !name.is_empty() && name != body => (name.clone(), Some(body.clone())),
        _ => (body.clone(), None),
    };
    Some(MatrixFile {
        name,
        source: source.clone(),
        mime_type,
        size: size.map(u64::from),
        caption,
    })
}

/// The `msgtype` of an attachment.
fn msgtype(kind: MediaKind) -> &'static str {
    match kind {
        MediaKind::Image => "m.image",
        MediaKind::Video => "m.video",
        MediaKind::Audio => "m.audio",
        MediaKind::File => "m.file",
    }
}

/// The content of a Matrix message for an uploaded attachment of `size`
/// bytes, with its caption.
pub(super) fn content_of(
    attachment: &Attachment,
    url: &OwnedMxcUri,
    size: usize,
    caption: Option<&str>,
) -> Value {
    let mut info = json!({ "mimetype": attachment.mime_type, "size": size });
    if matches!(attachment.kind, MediaKind::Image | MediaKind::Video) {
        if let Some(width) = attachment.width {
            info["w"] = width.into();
        }
        if let Some(height) = attachment.height {
            info["h"] = height.into();
        }
    }
    if matches!(attachment.kind, MediaKind::Audio | MediaKind::Video)
        && let Some(duration) = attachment.duration_ms
    {
        info["duration"] = duration.into();
    }
    let caption = caption.filter(|c| !c.is_empty());
    json!({
        "msgtype": msgtype(attachment.kind),
        "body": caption.unwrap_or(&attachment.file_name),
        "filename": attachment.file_name,
        "url": url,
        "info": info,
    })
}

/// A byte count as people read it.
pub(super) fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["bytes", "KiB", "MiB", "GiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} bytes")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use ruma::events::room::message::RoomMessageEventContent;
    use weft_runtime::events::MediaSource as RemoteSource;

    use super::*;

    fn attachment(kind: MediaKind) -> Attachment {
        Attachment {
            file_name: "cat.png".into(),
            mime_type: "image/png".into(),
            kind,
            size: None,
            width: Some(640),
            height: Some(480),
            duration_ms: Some(3000),
            source: RemoteSource::Bytes(vec![1, 2, 3]),
        }
    }

    #[test]
    fn an_image_becomes_m_image_with_its_dimensions_and_a_caption_as_body() {
        let url: OwnedMxcUri = "mxc://localhost/abc".into();
        let content = content_of(&attachment(MediaKind::Image), &url, 3, Some("look"));
        assert_eq!(content["msgtype"], "m.image");
        assert_eq!(content["body"], "look");
        assert_eq!(content["filename"], "cat.png");
        assert_eq!(content["info"]["w"], 640);
        assert_eq!(content["info"]["size"], 3);
        // No duration for a picture.
        assert!(content["info"].get("duration").is_none());
        // And ruma reads it back as the same file, with the caption.
        let parsed: RoomMessageEventContent = serde_json::from_value(content).unwrap();
        let file = file_of(&parsed.msgtype).unwrap();
        assert_eq!(file.name, "cat.png");
        assert_eq!(file.caption.as_deref(), Some("look"));
        assert_eq!(file.mime_type.as_deref(), Some("image/png"));
    }

    #[test]
    fn a_file_without_caption_is_named_by_its_body() {
        let url: OwnedMxcUri = "mxc://localhost/abc".into();
        let content = content_of(&attachment(MediaKind::Audio), &url, 3, None);
        assert_eq!(content["msgtype"], "m.audio");
        assert_eq!(content["body"], "cat.png");
        assert_eq!(content["info"]["duration"], 3000);
        assert!(content["info"].get("w").is_none());
        let parsed: RoomMessageEventContent = serde_json::from_value(content).unwrap();
        let file = file_of(&parsed.msgtype).unwrap();
        assert_eq!(file.caption, None);
    }

    #[test]
    fn sizes_read_in_the_largest_whole_unit() {
        assert_eq!(human_size(512), "512 bytes");
        assert_eq!(human_size(16 << 20), "16.0 MiB");
    }
}
