//! The custom handler the Azure Functions host starts: it reads configuration, binds
//! 127.0.0.1 on the port the host gives, and serves streamfold's functions and the bank's.

mod bank;
/// The `amount` fuzz target's body and its corpus replay (see the module).
#[cfg(test)]
mod fuzz_amount;

use std::net::Ipv4Addr;
use std::sync::Arc;

use anyhow::Context;
use streamfold::app::App;
use streamfold::config::Settings;
use streamfold::functions::Functions;
use streamfold::{functions, telemetry};

/// mimalloc instead of the C library's malloc: every request allocates and frees a few hundred
/// small blocks, which glibc's allocator (and musl's, in the static build) serves slowly.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    telemetry::init();
    let settings = Settings::from_env()?;
    let listener = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, settings.port))
        .await
        .with_context(|| format!("binding 127.0.0.1:{}", settings.port))?;
    let mut app = App::from_settings(settings)?;
    bank::register(&mut app)?;
    let app = Arc::new(app);
    tracing::info!(address = %listener.local_addr()?, "streamfold handler listening");
    functions::serve(listener, app_functions(app)?, telemetry::shutdown_signal()).await;
    Ok(())
}

/// Every function of the app: the library's generic ones and the bank's, with their routes
/// and the OpenAPI document of both.
fn app_functions(app: Arc<App>) -> Result<Functions, functions::DomainApiError> {
    functions::app_functions(app.clone(), vec![bank::api(app)?])
}

/// The app's routes checked against the function.json files and against its filters.
#[cfg(test)]
#[path = "main_tests.rs"]
mod tests;
