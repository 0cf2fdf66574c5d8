//! `brmble-client`: connects to a Brmble server as a user, prints the
//! `server.credentials` message, and optionally posts to a channel's room.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use brmble_client::{FlowError, Identity, MumbleOptions, Session};
use clap::{ArgGroup, Parser};

/// The exit status for a plain Mumble server, so scripts can tell "no
/// Matrix here" from a failure.
const EXIT_LEGACY: u8 = 3;

#[derive(Parser)]
#[command(
    about = "Connects to a Brmble server and prints the server.credentials message (JSON) on standard \
             output. It contains the user's Matrix access token: a secret.",
    long_about = "Connects to a Brmble server with a client certificate, the way a Brmble client does: \
                  either Mumble first (--mumble, flow A: the API's address is read from the welcome text) \
                  or API first (--api-url, flow B: the API says where Mumble is). It then fetches the Matrix \
                  credentials of the certificate and prints the server.credentials message as JSON on \
                  standard output. That output contains the user's Matrix access token: treat it as a \
                  secret. With --say and --channel it then joins every room of the room map and posts the \
                  text to the channel's room.",
    after_help = "Exit status: 0 done; 1 failed; 3 a plain Mumble server (no Brmble marker in its welcome \
                  text, so no Matrix), nothing printed on standard output."
)]
#[command(group(ArgGroup::new("server").required(true).args(["mumble", "api_url"])))]
struct Args {
    /// Flow A: the Mumble server, as HOST:PORT (or HOST for port 64738;
    /// IPv6 as [ADDR]:PORT).
    #[arg(long, value_name = "HOST:PORT")]
    mumble: Option<String>,
    /// Flow B: the Brmble API's base URL, e.g. https://example.org/brmble.
    #[arg(long, value_name = "URL")]
    api_url: Option<String>,
    /// The directory of the client certificate and key (cert.pem,
    /// key.pem); created, owner-only, with a new identity if it has
    /// neither. The certificate is the Matrix account: keep it.
    #[arg(long, value_name = "DIR", default_value = "./brmble-identity")]
    identity: PathBuf,
    /// The Mumble username.
    #[arg(long, value_name = "NAME")]
    username: String,
    /// Post this text to the Matrix room of --channel.
    #[arg(long, value_name = "TEXT", requires = "channel")]
    say: Option<String>,
    /// The Mumble channel id whose room --say posts to.
    #[arg(long, value_name = "ID", requires = "say")]
    channel: Option<String>,
    /// Accept only the Mumble server certificate with this SHA-1 (hex,
    /// colons allowed); by default any is, Mumble servers being
    /// self-signed. Its hash is printed on standard error on each connect.
    #[arg(long, value_name = "SHA1")]
    server_cert_sha1: Option<String>,
    /// The limit on the Mumble handshake, in seconds.
    #[arg(long, value_name = "SECS", default_value_t = 10)]
    timeout: u64,
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    match run(args).await {
        Ok(code) => code,
        Err(error) => {
            eprintln!("brmble-client: {error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let identity = Identity::load_or_create(&args.identity).with_context(|| {
        format!(
            "failed to load or create the identity in {}",
            args.identity.display()
        )
    })?;
    eprintln!(
        "identity {}: certificate SHA-1 {}",
        args.identity.display(),
        identity.cert_hash()
    );
    let mut options = MumbleOptions::default().timeout(Duration::from_secs(args.timeout));
    if let Some(pin) = &args.server_cert_sha1 {
        options = options.pin_server_cert(pin.clone());
    }

    let found = match (&args.mumble, &args.api_url) {
        (Some(mumble), _) => {
            let (host, port) = parse_host_port(mumble)?;
            brmble_client::flow_a_with(&host, port, &identity, &args.username, &options).await
        }
        (None, Some(api_url)) => {
            brmble_client::flow_b_with(api_url, &identity, &args.username, &options).await
        }
        (None, None) => unreachable!("clap requires one of --mumble and --api-url"),
    };
    let session = match found {
        Ok(session) => session,
        Err(FlowError::Legacy { server_sync }) => {
            eprintln!(
                "plain Mumble server (session {}, server certificate SHA-1 {}): its welcome text has \
                 no Brmble marker, so there is no Matrix{}",
                server_sync.session,
                server_sync.server_cert_hash,
                if args.say.is_some() {
                    "; nothing was sent"
                } else {
                    ""
                }
            );
            return Ok(ExitCode::from(EXIT_LEGACY));
        }
        Err(error) => return Err(error).context("failed to get the Brmble credentials"),
    };
    report(&session);

    let message = brmble_client::server_credentials_message(&session.credentials);
    println!("{}", serde_json::to_string_pretty(&message)?);

    if let (Some(text), Some(channel)) = (&args.say, &args.channel) {
        let event_id = brmble_client::join_and_say(&session.credentials.matrix, channel, text)
            .await
            .with_context(|| format!("failed to post to the Matrix room of channel {channel}"))?;
        eprintln!(
            "sent {event_id} to {}",
            session.credentials.matrix.room_map[channel]
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// What was found, on standard error: standard output is the message.
fn report(session: &Session) {
    eprintln!(
        "Mumble {}:{} session {} (server certificate SHA-1 {}); Brmble API {}; Matrix user {}",
        session.mumble_host,
        session.mumble_port,
        session.server_sync.session,
        session.server_sync.server_cert_hash,
        session.api_url,
        session.credentials.matrix.user_id
    );
}

/// `HOST:PORT`, `HOST`, `[V6]:PORT`, `[V6]` or a bare IPv6 address.
fn parse_host_port(text: &str) -> anyhow::Result<(String, u16)> {
    let port = |p: &str| {
        p.parse::<u16>()
            .ok()
            .filter(|p| *p != 0)
            .with_context(|| format!("`{p}` in `{text}` is not a port"))
    };
    let (host, port) = if let Some(bracketed) = text.strip_prefix('[') {
        let (host, rest) = bracketed
            .split_once(']')
            .with_context(|| format!("`{text}` has no closing `]`"))?;
        match rest {
            "" => (host, brmble_client::DEFAULT_PORT),
            _ => match rest.strip_prefix(':') {
                Some(p) => (host, port(p)?),
                None => anyhow::bail!("`{text}` has something other than :PORT after `]`"),
            },
        }
    } else {
        match text.split_once(':') {
            // More than one colon: an IPv6 address without a port.
            Some(_) if text.matches(':').count() > 1 => (text, brmble_client::DEFAULT_PORT),
            Some((host, p)) => (host, port(p)?),
            None => (text, brmble_client::DEFAULT_PORT),
        }
    };
    anyhow::ensure!(!host.is_empty(), "`{text}` has no host");
    Ok((host.to_owned(), port))
}

#[cfg(test)]
mod tests {
    use super::{Args, parse_host_port};
    use clap::Parser as _;

    #[test]
    fn mumble_addresses_parse_with_and_without_ports() {
        let parse = |text: &str| parse_host_port(text).unwrap();
        // Host and port.
        assert_eq!(parse("127.0.0.1:29301"), ("127.0.0.1".into(), 29301));
        assert_eq!(
            parse("mumble.example.org:64739"),
            ("mumble.example.org".into(), 64739)
        );
        // Mumble's default port when none is given.
        assert_eq!(
            parse("mumble.example.org"),
            ("mumble.example.org".into(), 64738)
        );
        // IPv6, bracketed or bare.
        assert_eq!(parse("[::1]:29301"), ("::1".into(), 29301));
        assert_eq!(parse("[::1]"), ("::1".into(), 64738));
        assert_eq!(parse("fe80::1"), ("fe80::1".into(), 64738));
    }

    #[test]
    fn bad_mumble_addresses_are_errors_that_quote_the_input() {
        for text in [
            "host:",
            "host:0",
            "host:99999",
            "host:x",
            ":64738",
            "[::1",
            "[::1]x",
            "",
        ] {
            let error = parse_host_port(text).unwrap_err().to_string();
            // Each is refused, naming what was given.
            assert!(error.contains(&format!("`{text}`")), "{text}: {error}");
        }
    }

    #[test]
    fn exactly_one_of_mumble_and_api_url_is_required_and_say_needs_a_channel() {
        let parse = |args: &[&str]| Args::try_parse_from([&["brmble-client"], args].concat());
        // Neither server option.
        assert!(parse(&["--username", "a"]).is_err());
        // Both.
        assert!(parse(&["--username", "a", "--mumble", "h", "--api-url", "http://h"]).is_err());
        // --say without --channel, and the reverse.
        assert!(parse(&["--username", "a", "--mumble", "h", "--say", "hi"]).is_err());
        assert!(parse(&["--username", "a", "--mumble", "h", "--channel", "1"]).is_err());
        // A complete flow A command line, with the default identity dir.
        let args = parse(&[
            "--username",
            "a",
            "--mumble",
            "h:1",
            "--say",
            "hi",
            "--channel",
            "1",
        ])
        .unwrap();
        assert_eq!(args.identity, std::path::PathBuf::from("./brmble-identity"));
        assert_eq!(args.timeout, 10);
    }
}
