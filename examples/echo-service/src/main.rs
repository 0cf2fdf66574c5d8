//! `echo-service`: runs the echo chat service for the demo.

use std::net::SocketAddr;

use clap::Parser;

#[derive(Parser)]
#[command(about = "A tiny chat service for weft's echo connector to bridge.")]
struct Args {
    /// Where to listen; keep it on loopback (the admin API has no auth).
    #[arg(long, default_value = "127.0.0.1:8090")]
    listen: SocketAddr,
    /// Users to create, as `name:password[:Display Name]`.
    #[arg(long = "user")]
    users: Vec<String>,
    /// Keep the state in this file, so a restart keeps users, chats,
    /// messages and tokens.
    #[arg(long)]
    state_file: Option<std::path::PathBuf>,
    /// Post the time every this many seconds in a "Clock" chat that every
    /// user is in, so a demo shows messages arriving on their own (0: off).
    #[arg(long, default_value_t = 0)]
    clock_secs: u64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new("info"))
        .init();
    let args = Args::parse();
    let service = echo_service::EchoService::new();
    if let Some(path) = args.state_file.clone() {
        service.persist_to(path)?;
    }
    for user in &args.users {
        let mut parts = user.splitn(3, ':');
        let (Some(name), Some(password)) = (parts.next(), parts.next()) else {
            anyhow::bail!("--user takes name:password[:Display Name], got `{user}`");
        };
        let display = parts.next().unwrap_or(name);
        service.add_user(name, password, display);
        tracing::info!(user = name, "user created");
    }
    let addr = service.serve(args.listen).await?;
    tracing::info!(%addr, "echo service listening");
    if args.clock_secs > 0 {
        let mut members: Vec<&str> = vec!["clock"];
        members.extend(args.users.iter().filter_map(|u| u.split(':').next()));
        service.add_user("clock", &format!("{:x}", rand::random::<u128>()), "Clock");
        let chat = match service.chat_named("Clock") {
            Some(chat) => chat,
            None => service.add_chat(Some("Clock"), "group", &members),
        };
        let service = service.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(std::time::Duration::from_secs(args.clock_secs));
            tick.tick().await;
            loop {
                tick.tick().await;
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap_or_default()
                    .as_secs();
                let (h, m, s) = ((now / 3600) % 24, (now / 60) % 60, now % 60);
                service.say(
                    &chat,
                    "clock",
                    &format!("The time is {h:02}:{m:02}:{s:02} UTC"),
                );
            }
        });
    }
    // Ctrl-C or SIGTERM (what scripts/run.sh sends on its way out): save
    // what the last second changed.
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        result = tokio::signal::ctrl_c() => result?,
        _ = terminate.recv() => {}
    }
    if let Some(path) = &args.state_file {
        service.save(path, "")?;
    }
    Ok(())
}
