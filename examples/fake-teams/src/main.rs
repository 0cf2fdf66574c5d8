//! `fake-teams`: runs the fake Teams and identity platform for the demo.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Parser;
use fake_teams::FakeTeams;

#[derive(Parser)]
#[command(
    about = "A fake of consumer Microsoft Teams and the Microsoft identity platform, for weft's Teams connector."
)]
struct Args {
    /// Where to listen; keep it on loopback (the /fake pages log anyone in).
    #[arg(long, default_value = "127.0.0.1:8095")]
    listen: SocketAddr,
    /// Keep the state in this file, so a restart keeps accounts, chats,
    /// messages and every issued token (logins survive).
    #[arg(long)]
    state: Option<PathBuf>,
    /// How long skypetokens live, in seconds.
    #[arg(long, default_value_t = 86_400)]
    skypetoken_lifetime: u64,
    /// Don't create the demo's accounts and chats on first start.
    #[arg(long)]
    no_seed: bool,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let args = Args::parse();
    if let Some(dir) = args.state.as_deref().and_then(std::path::Path::parent)
        && !dir.as_os_str().is_empty()
    {
        std::fs::create_dir_all(dir)?;
    }
    let fake = FakeTeams::start_on(args.listen, args.state.clone()).await?;
    let base = fake.base_url();
    fake.identity()
        .set_verification_url(&format!("{base}/fake/devicelogin"));
    fake.set_skypetoken_lifetime(args.skypetoken_lifetime);
    let seeded = !args.no_seed && fake.seed_demo();

    println!("fake Teams listening on {base}");
    println!("  identity platform (authority)  {base}");
    println!("    SPA refresh                  POST {base}/consumers/oauth2/v2.0/token");
    println!(
        "    device-code refresh          POST {base}/{}/oauth2/v2.0/token",
        fake_teams::identity::CONSUMER_TENANT
    );
    println!(
        "    device code                  POST {base}/common/oauth2/devicecode, /common/oauth2/token"
    );
    println!("  skypetoken                     POST {}", fake.authz_url());
    println!(
        "  chat service                   {}",
        fake.chat_service_url()
    );
    println!(
        "  chat service (AFD)             {}",
        fake.chat_service_afd_url()
    );
    println!("  device login page              {base}/fake/devicelogin");
    println!("  accounts and web sessions      {base}/fake");
    match &args.state {
        Some(path) if seeded => println!("  state (seeded just now)        {}", path.display()),
        Some(path) => println!("  state                          {}", path.display()),
        None => println!("  state                          in memory only"),
    }
    println!("accounts:");
    for account in fake.accounts() {
        println!(
            "  {:<12} {:<16} {:<34} web session: {base}/fake/session/{}",
            account.username, account.display_name, account.mri, account.username
        );
    }

    // Ctrl-C or SIGTERM (what scripts/run.sh sends on its way out): save
    // what the last second changed, e.g. a rotated refresh token.
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        result = tokio::signal::ctrl_c() => result?,
        _ = terminate.recv() => {}
    }
    if let Some(path) = &args.state {
        fake.save(path)?;
    }
    Ok(())
}
