//! How the fake writes its resources on the wire: messages, conversations
//! and threads in the shapes of the reference (§4.2, §4.3 and its field
//! reports), plus the text helpers they need.
//!
//! Where the reference documents more than one shape for a field, the
//! answers use each of them, as the crate docs' table lists.

use std::collections::BTreeMap;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Map, Value, json};

use crate::identity::{civil, random_string};
use crate::state::{Attachment, Chat, ChatKind, ContentForm, StoredFile, StoredMessage};

/// The base URLs answers link to, from the request's `Host`.
#[derive(Debug, Clone)]
pub(crate) struct Links {
    /// `http://127.0.0.1:PORT`.
    pub(crate) root: String,
    /// The chat service base the request came in on: `{root}/msgapi` or
    /// `{root}/api/chatsvc/consumer`.
    pub(crate) chat: String,
}

impl Links {
    pub(crate) fn conversation(&self, id: &str) -> String {
        format!("{}/v1/users/ME/conversations/{id}", self.chat)
    }

    pub(crate) fn contact(&self, mri: &str) -> String {
        format!("{}/v1/users/ME/contacts/{mri}", self.chat)
    }

    pub(crate) fn file(&self, id: &str) -> String {
        format!("{}/files/{id}", self.root)
    }

    pub(crate) fn object(&self, id: &str) -> String {
        format!("{}/asm/v1/objects/{id}", self.root)
    }
}

pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// `2026-02-08T07:48:12.874Z`, or with `seven` digits
/// `2026-02-08T07:48:12.8740000Z`.
pub(crate) fn iso_ms(ms: u64, seven: bool) -> String {
    let (y, mo, d, h, mi, s) = civil(ms / 1000);
    let frac = ms % 1000;
    if seven {
        format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}.{frac:03}0000Z")
    } else {
        format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}.{frac:03}Z")
    }
}

/// Escapes text for HTML content, as the Teams app writes it.
pub(crate) fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// The text of HTML content: tags dropped (a `<p>`, `<div>` or `<br>`
/// after text starts a new line), entities decoded.
pub(crate) fn plain_text(html: &str) -> String {
    let mut out = String::with_capacity(html.len());
    let mut rest = html;
    while let Some(start) = rest.find(['<', '&']) {
        out.push_str(&rest[..start]);
        rest = &rest[start..];
        if rest.starts_with('<') {
            let Some(end) = rest.find('>') else {
                out.push_str(rest);
                rest = "";
                break;
            };
            let tag = rest[1..end].trim_start_matches('/').to_ascii_lowercase();
            let name = tag.split([' ', '/']).next().unwrap_or_default();
            if matches!(name, "p" | "div" | "br") && !out.is_empty() && !out.ends_with('\n') {
                out.push('\n');
            }
            rest = &rest[end + 1..];
        } else {
            let end = rest.find(';').filter(|&e| e <= 10);
            let decoded = end.and_then(|e| decode_entity(&rest[1..e]));
            match (end, decoded) {
                (Some(end), Some(c)) => {
                    out.push(c);
                    rest = &rest[end + 1..];
                }
                _ => {
                    out.push('&');
                    rest = &rest[1..];
                }
            }
        }
    }
    out.push_str(rest);
    out.trim_end_matches('\n').to_owned()
}

fn decode_entity(name: &str) -> Option<char> {
    match name {
        "amp" => Some('&'),
        "lt" => Some('<'),
        "gt" => Some('>'),
        "quot" => Some('"'),
        "apos" => Some('\''),
        "nbsp" => Some('\u{a0}'),
        _ => {
            let number = name.strip_prefix('#')?;
            let code = match number.strip_prefix(['x', 'X']) {
                Some(hex) => u32::from_str_radix(hex, 16).ok()?,
                None => number.parse().ok()?,
            };
            char::from_u32(code)
        }
    }
}

/// A skypetoken: JWT-shaped like the real one (an RS256 header, the
/// `skypeid` claim CN reads, the `iat`/`exp`/`scp`/`csi`/`cid` claims of
/// the miranda-ng capture) with a random signature.
pub(crate) fn skypetoken_jwt(skype_id: &str, iat: u64, exp: u64) -> String {
    let header = json!({"alg": "RS256", "kid": "202601010000", "x5t": random_string(27, b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"), "typ": "JWT"});
    let claims = json!({
        "iat": iat,
        "exp": exp,
        "skypeid": skype_id,
        "scp": 956,
        "csi": iat.to_string(),
        "cid": random_string(16, b"0123456789abcdef"),
        "rgn": "emea",
    });
    format!(
        "{}.{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string()),
        random_string(
            342,
            b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
        )
    )
}

/// A file's extension, as `fileType` gives it.
fn extension(name: &str) -> String {
    name.rsplit_once('.')
        .map(|(_, ext)| ext.to_ascii_lowercase())
        .unwrap_or_default()
}

/// `properties.files`: a JSON *string* of the file list (field reports).
fn files_property(links: &Links, id: &str, file: &StoredFile) -> String {
    let url = links.file(id);
    json!([{
        "@type": "http://schema.skype.com/File",
        "version": 2,
        "id": id,
        "baseUrl": format!("{}/files/", links.root),
        "type": extension(&file.name),
        "title": file.name,
        "state": "active",
        "objectUrl": url,
        "itemid": id,
        "fileName": file.name,
        "fileType": extension(&file.name),
        "fileInfo": {
            "itemId": id,
            "fileUrl": url,
            "siteUrl": format!("{}/files/", links.root),
            "serverRelativeUrl": "",
            "shareUrl": format!("{url}?share=1"),
            "shareId": "",
        },
        "botFileProperties": {},
        "permissionScope": "users",
        "filePreview": {},
        "fileChicletState": {"serviceName": "p2p", "state": "active"},
    }])
    .to_string()
}

/// A picture message's `URIObject`, pointing at the fake's media store.
fn uri_object(links: &Links, id: &str, file: &StoredFile) -> String {
    let uri = links.object(id);
    let name = escape(&file.name);
    format!(
        "<URIObject type=\"Picture.1\" uri=\"{uri}\" url_thumbnail=\"{uri}/views/imgt1\">To view this shared photo, go to: <a href=\"{uri}/views/imgo\">{uri}/views/imgo</a><OriginalName v=\"{name}\"></OriginalName><FileSize v=\"{}\"></FileSize><meta type=\"photo\" originalName=\"{name}\"/></URIObject>",
        file.bytes.len()
    )
}

/// A message resource as `viewer` gets it.
pub(crate) fn message(
    chat: &Chat,
    viewer: &str,
    m: &StoredMessage,
    links: &Links,
    files: &BTreeMap<String, StoredFile>,
) -> Value {
    let n = m.shape;
    let conversation = chat.id_for(viewer);
    let seven = (n / 2) % 2 == 1;
    let content = match &m.attachment {
        Some(Attachment::Image(id)) => files
            .get(id)
            .map_or_else(String::new, |f| uri_object(links, id, f)),
        _ => m.content.clone(),
    };
    let content = match m.content_form {
        ContentForm::Text => Value::String(content),
        ContentForm::Object => json!({ "text": content }),
        ContentForm::Number => content
            .parse::<u64>()
            .map_or(Value::String(content), Value::from),
    };
    let mut properties: Map<String, Value> = m.properties.clone();
    if let Some(Attachment::File(id)) = &m.attachment
        && let Some(file) = files.get(id)
    {
        properties.insert(
            "files".to_owned(),
            Value::String(files_property(links, id, file)),
        );
    }
    if let Some(edit) = m.edit_ms {
        properties.insert("edittime".to_owned(), Value::String(edit.to_string()));
    }
    if let Some(delete) = m.delete_ms {
        properties.insert("deletetime".to_owned(), Value::String(delete.to_string()));
    }
    if !m.emotions.is_empty() {
        let emotions: Vec<Value> = m
            .emotions
            .iter()
            .map(|e| {
                let users: Vec<Value> = e
                    .users
                    .iter()
                    .map(|u| json!({"mri": u.mri, "time": u.time, "value": u.value}))
                    .collect();
                json!({"key": e.key, "users": users})
            })
            .collect();
        properties.insert("emotions".to_owned(), Value::Array(emotions));
    }
    let from = if n % 4 == 3 {
        json!({"id": m.from, "displayName": m.display_name})
    } else {
        Value::String(links.contact(&m.from))
    };
    let mut body = json!({
        "id": if n.is_multiple_of(2) { Value::from(m.id.to_string()) } else { Value::from(m.id) },
        "sequenceId": if n % 3 == 1 { Value::from(m.sequence_id.to_string()) } else { Value::from(m.sequence_id) },
        "clientmessageid": m.clientmessageid,
        "version": m.version.to_string(),
        "conversationid": conversation,
        "conversationLink": links.conversation(&conversation),
        "type": "Message",
        "messagetype": m.messagetype,
        "contenttype": m.contenttype,
        "content": content,
        "amsreferences": [],
        "from": from,
        "imdisplayname": m.display_name,
        "composetime": iso_ms(m.compose_ms, seven),
        "originalarrivaltime": iso_ms(m.id, seven),
        "properties": properties,
    });
    if let Some(edited) = &m.edited_id {
        body["skypeeditedid"] = json!(edited);
    }
    if let Some(topic) = &chat.topic {
        body["threadtopic"] = json!(topic);
    }
    body
}

/// A conversation list item as `viewer` gets it (§4.2).
pub(crate) fn conversation(
    chat: &Chat,
    viewer: &str,
    links: &Links,
    files: &BTreeMap<String, StoredFile>,
) -> Value {
    let id = chat.id_for(viewer);
    let last = chat.messages.last();
    let last_message = last.map_or_else(|| json!({}), |m| message(chat, viewer, m, links, files));
    let mut properties = json!({
        "isemptyconversation": if last.is_some() { "false" } else { "true" },
        "alerts": "true",
        "conversationstatus": "Accepted",
    });
    if let Some(last) = last {
        properties["lastimreceivedtime"] = json!(iso_ms(last.id, false));
    }
    if let Some(horizon) = chat.horizons.get(viewer) {
        properties["consumptionhorizon"] = json!(horizon.value);
    }
    let mut body = json!({
        "id": id,
        "type": "Conversation",
        "version": chat.version,
        "properties": properties,
        "lastMessage": last_message,
        "messages": format!("{}/messages", links.conversation(&id)),
    });
    if let Some((message, version)) = chat.last_updated {
        body["lastUpdatedMessageId"] = json!(message);
        body["lastUpdatedMessageVersion"] = json!(version);
    }
    match chat.kind {
        ChatKind::LegacyDm => {
            body["targetLink"] = json!(links.contact(&id));
            if chat.index % 2 == 1 {
                body["threadProperties"] = Value::Null;
            }
        }
        ChatKind::Dm | ChatKind::Group => {
            body["targetLink"] = json!(format!("{}/v1/threads/{id}", links.chat));
            body["threadProperties"] = thread_properties(chat, true);
        }
    }
    body
}

/// A thread's properties; `listing` adds what only list items carry.
fn thread_properties(chat: &Chat, listing: bool) -> Value {
    let mut properties = json!({
        "threadType": "chat",
        "version": chat.version.to_string(),
        "createdat": chat.created_ms.to_string(),
        "membercount": chat.members.len().to_string(),
    });
    if listing {
        properties["lastjoinat"] = json!(chat.created_ms.to_string());
        properties["originalThreadId"] = json!(chat.key);
    }
    if let Some(topic) = &chat.topic {
        properties["topic"] = json!(topic);
    }
    if chat.kind == ChatKind::Dm {
        if chat.index.is_multiple_of(2) {
            properties["productThreadType"] = json!("OneToOneChat");
        } else {
            properties["uniquerosterthread"] = json!("true");
        }
    }
    properties
}

/// `GET /v1/threads/{id}`: the thread and its members (§4.2).
pub(crate) fn thread(chat: &Chat, links: &Links, names: impl Fn(&str) -> String) -> Value {
    let ids_only = chat.index % 3 == 2;
    let members: Vec<Value> = chat
        .members
        .iter()
        .map(|m| {
            let mut member = json!({
                "id": m.mri,
                "userLink": format!("{}/v1/users/{}", links.chat, m.mri),
                "role": m.role,
                "capabilities": [],
                "linkedMri": "",
                "userTile": "",
                "cid": 0,
            });
            if !ids_only {
                member["friendlyName"] = json!(names(&m.mri));
            }
            member
        })
        .collect();
    let mut properties = thread_properties(chat, false);
    if let Some(creator) = chat.members.first() {
        properties["creator"] = json!(creator.mri);
    }
    properties["historydisclosed"] = json!("false");
    json!({
        "id": chat.key,
        "type": "Thread",
        "properties": properties,
        "members": members,
        "version": chat.version,
        "messages": format!("{}/messages", links.conversation(&chat.key)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_text_drops_tags_and_decodes_entities() {
        // Paragraphs become lines, entities their characters.
        assert_eq!(
            plain_text("<p>a &lt;b&gt; &amp; &#39;c&#39;</p><p>d&#x21;</p>"),
            "a <b> & 'c'\nd!"
        );
        // A stray ampersand or bracket survives.
        assert_eq!(plain_text("fish & chips <3"), "fish & chips <3");
        // Escaping and reading back is the identity.
        let text = "<script>\"x\" & 'y'</script>";
        assert_eq!(plain_text(&escape(text)), text);
    }

    #[test]
    fn arrival_times_have_three_or_seven_fractional_digits() {
        // 2026-02-08T07:48:12.874Z, the field reports' example.
        let ms = 1_770_536_892_874;
        assert_eq!(iso_ms(ms, false), "2026-02-08T07:48:12.874Z");
        assert_eq!(iso_ms(ms, true), "2026-02-08T07:48:12.8740000Z");
    }

    #[test]
    fn a_skypetoken_carries_its_skype_id_claim() {
        let token = skypetoken_jwt("live:.cid.0123456789abcdef", 10, 20);
        let claims = token.split('.').nth(1).unwrap();
        let claims: Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(claims).unwrap()).unwrap();
        // The claim clients read their own id from.
        assert_eq!(claims["skypeid"], "live:.cid.0123456789abcdef");
        assert_eq!(claims["exp"], 20);
    }
}
