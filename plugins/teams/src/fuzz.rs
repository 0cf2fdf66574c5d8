//! Fuzz targets (`WEFT_FUZZ_CASES`, see `weft-fuzz`): the message page
//! decoder and planner, and the HTML converter, on what a hostile or
//! broken chat service could send. None may panic.

use std::collections::BTreeSet;

use proptest::prelude::*;

use crate::html;
use crate::model::MessagePage;
use crate::sync::{Context, MediaAuth, ThreadState};

/// Field names and values of Teams messages (§4.3 and the field reports).
const KEYS: &[&str] = &[
    "messages",
    "_metadata",
    "backwardLink",
    "syncState",
    "id",
    "sequenceId",
    "clientmessageid",
    "version",
    "conversationid",
    "type",
    "messagetype",
    "contenttype",
    "content",
    "from",
    "imdisplayname",
    "composetime",
    "originalarrivaltime",
    "properties",
    "skypeeditedid",
    "edittime",
    "deletetime",
    "emotions",
    "key",
    "users",
    "mri",
    "time",
    "value",
    "files",
    "fileName",
    "fileInfo",
    "fileUrl",
    "objectUrl",
    "text",
];
const STRINGS: &[&str] = &[
    "Message",
    "RichText/Html",
    "RichText",
    "Text",
    "Control/Typing",
    "ThreadActivity/AddMember",
    "RichText/Media_GenericFile",
    "RichText/UriObject",
    "1700000000000",
    "2023-11-14T22:13:20.000Z",
    "2023-11-14T22:13:20.1234567Z",
    "8:live:bob",
    "8:live:alice",
    "https://msgapi.teams.live.com/v1/users/ME/contacts/8:live:bob",
    "like",
    "heart",
    "",
    "<p>hi</p>",
    "<URIObject uri=\"https://x.asm.skype.com/v1/objects/0-1\" type=\"Picture.1\">",
    "[{\"fileName\":\"a.txt\",\"fileInfo\":{\"fileUrl\":\"https://x\"}}]",
    "not json [",
];
/// Pieces of the HTML Teams and Matrix clients send.
const MARKUP: &[&str] = &[
    "<p>",
    "</p>",
    "<b>",
    "</b>",
    "<br>",
    "<br/>",
    "<a href=\"",
    "\">",
    "</a>",
    "<img src=\"",
    "\" />",
    "<blockquote itemscope=\"\" itemtype=\"http://schema.skype.com/Reply\" itemid=\"",
    "</blockquote>",
    "<mx-reply>",
    "</mx-reply>",
    "<URIObject uri=\"",
    "\" type=\"Picture.1\">",
    "</URIObject>",
    "&amp;",
    "&lt;",
    "&#128512;",
    "&#x1F600;",
    "&#xD800;",
    "&#99999999;",
    "&",
    "<",
    ">",
    "\"",
    "'",
    "<!--",
    "-->",
    "<at id=\"0\">",
    "</at>",
    "é",
    "\u{0}",
];

proptest! {
    #![proptest_config(weft_fuzz::config())]

    #[test]
    fn any_message_page_decodes_and_plans_without_a_panic(page in weft_fuzz::json(KEYS, STRINGS)) {
        let Ok(page) = serde_json::from_value::<MessagePage>(page) else { return Ok(()) };
        let messages = page.into_parts().messages;
        let sent = BTreeSet::new();
        let media = MediaAuth {
            origins: vec!["https://msgapi.teams.live.com:443".into()],
            media_service: "https://*.asm.skype.com:443".into(),
            skypetoken: "skype".into(),
        };
        let context = Context {
            chat_id: "19:a@thread.v2",
            me: "8:live:alice",
            sent: &sent,
            media: &media,
            now_ms: 1_700_000_000_000,
        };
        let mut state = ThreadState::default();
        // Twice: the second time every message has been seen before.
        let _ = context.plan(&mut state, messages.clone());
        let _ = context.plan(&mut state, messages);
    }

    #[test]
    fn any_html_converts_without_a_panic(text in weft_fuzz::spliced(MARKUP)) {
        let _ = html::to_plain(&text);
        let _ = html::decode_entities(&text);
        let _ = html::take_reply(&text);
        let _ = html::strip_mx_reply(&text);
        let _ = html::first_img_src(&text);
        let _ = html::parse_uri_object(&text);
        let _ = html::has_markup(&text);
        let escaped = html::escape(&text);
        // Escaped text reads back as itself.
        prop_assert_eq!(html::decode_entities(&escaped), text);
    }
}
