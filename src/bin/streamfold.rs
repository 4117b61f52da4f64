//! The operator CLI, `streamfold`: reads the arguments and the app settings, composes the app
//! as the handler does, with the bank's projections and read models, and runs the command
//! (everything is in `streamfold::ops`; see the README's "Operating streamfold").

// The bank as the handler registers it; only its registration is used here.
#[allow(dead_code)]
#[path = "../bank/mod.rs"]
mod bank;

use std::process::ExitCode;

fn main() -> ExitCode {
    streamfold::ops::main(bank::register)
}
