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
use streamfold::{functions, runtime, telemetry};

/// mimalloc instead of the C library's malloc: every request allocates and frees a few hundred
/// small blocks, which glibc's allocator (and musl's, in the static build) serves slowly.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// mimalloc's option `purge_delay` (`mi_option_purge_delay` in mimalloc.h, which
/// `libmimalloc-sys` names no constant for): how long freed memory is kept before it is returned
/// to the OS.
const MIMALLOC_PURGE_DELAY_OPTION: libmimalloc_sys::mi_option_t = 15;
/// Milliseconds before freed memory goes back to the OS (mimalloc v3's default is 1000, which let
/// the 1 MiB answers of a long read pile up to 82 MiB of RSS; `MIMALLOC_PURGE_DELAY` overrides).
const MIMALLOC_PURGE_DELAY_MS: std::os::raw::c_long = 10;

fn main() -> anyhow::Result<()> {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
        // SAFETY: sets one of mimalloc's options to a valid value; mimalloc reads options
        // atomically, so this is sound at any time, before any thread is started here.
        unsafe {
            libmimalloc_sys::mi_option_set(MIMALLOC_PURGE_DELAY_OPTION, MIMALLOC_PURGE_DELAY_MS)
        };
    }
    runtime::build()
        .context("starting the async runtime")?
        .block_on(serve())
}

async fn serve() -> anyhow::Result<()> {
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
