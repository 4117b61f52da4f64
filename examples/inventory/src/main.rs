//! The inventory app's custom handler: the same start-up as the bank's (settings, bind
//! 127.0.0.1 on the host's port, serve), with the inventory registered instead.

use std::net::Ipv4Addr;
use std::sync::Arc;

use streamfold::prelude::*;
use streamfold::{functions, telemetry};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    telemetry::init();
    let settings = Settings::from_env()?;
    let listener = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, settings.port)).await?;
    let mut app = App::from_settings(settings)?;
    streamfold_inventory::register(&mut app)?;
    let app = Arc::new(app);
    let api = streamfold_inventory::api(app.clone())?;
    let functions = functions::app_functions(app, vec![api])?;
    tracing::info!(address = %listener.local_addr()?, "inventory handler listening");
    functions::serve(listener, functions, telemetry::shutdown_signal()).await;
    Ok(())
}
