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
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new("info"))
        .init();
    let args = Args::parse();
    let service = echo_service::EchoService::new();
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
    tokio::signal::ctrl_c().await?;
    Ok(())
}
