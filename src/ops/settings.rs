//! The CLI's settings are the handler's: app settings read from the environment or, for a
//! local run, from a `local.settings.json` (its `Values`, as `func` reads them) given with
//! `--settings <file>` or found in the current directory. The environment wins over the file,
//! as it does under the Functions host. The pairs are then read by [`Settings::from_pairs`]
//! and composed by [`App::from_settings`], the code the handler runs: nothing is parsed twice.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde_json::Value;

use super::OpsError;
use crate::app::App;
use crate::config::Settings;

/// The file read from the current directory when `--settings` is not given.
pub const LOCAL_SETTINGS_FILE: &str = "local.settings.json";
/// The object of `local.settings.json` that holds the app settings.
pub const VALUES_FIELD: &str = "Values";

/// The app settings: the file's `Values` (the given file, else `./local.settings.json` when
/// there is one), overridden by the environment.
pub fn load(
    file: Option<&Path>,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<HashMap<String, String>, OpsError> {
    let file = match file {
        Some(file) => Some(file.to_path_buf()),
        None => Some(PathBuf::from(LOCAL_SETTINGS_FILE)).filter(|f| f.is_file()),
    };
    let mut pairs = match file {
        Some(file) => from_file(&file)?,
        None => HashMap::new(),
    };
    pairs.extend(env);
    Ok(pairs)
}

/// The app the settings describe (storage, read models, notifications), as the handler has it.
pub fn app(pairs: &HashMap<String, String>) -> Result<App, OpsError> {
    let settings =
        Settings::from_pairs(pairs.clone()).map_err(|e| OpsError::Settings(e.to_string()))?;
    App::from_settings(settings).map_err(|e| OpsError::Settings(e.to_string()))
}

fn from_file(file: &Path) -> Result<HashMap<String, String>, OpsError> {
    let bad = |reason: String| OpsError::Settings(format!("{}: {reason}", file.display()));
    let text = std::fs::read_to_string(file).map_err(|e| bad(e.to_string()))?;
    let json: Value = serde_json::from_str(&text).map_err(|e| bad(e.to_string()))?;
    let values = match json.get(VALUES_FIELD) {
        None => return Ok(HashMap::new()),
        Some(Value::Object(values)) => values,
        Some(_) => return Err(bad(format!("{VALUES_FIELD} is not an object"))),
    };
    values
        .iter()
        .map(|(name, value)| match value {
            Value::String(text) => Ok((name.clone(), text.clone())),
            Value::Bool(_) | Value::Number(_) => Ok((name.clone(), value.to_string())),
            _ => Err(bad(format!("{VALUES_FIELD}.{name} is not a string"))),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_environment_wins_over_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("s.json");
        std::fs::write(
            &file,
            r#"{"IsEncrypted": false, "Values": {"A": "file", "B": "file", "N": 3}}"#,
        )
        .unwrap();
        let pairs = load(Some(&file), vec![("B".to_owned(), "env".to_owned())]).unwrap();
        assert_eq!(pairs["A"], "file");
        assert_eq!(pairs["B"], "env");
        assert_eq!(pairs["N"], "3");
        std::fs::write(&file, r#"{"Values": {"A": {}}}"#).unwrap();
        let error = load(Some(&file), Vec::new()).unwrap_err();
        assert!(error.to_string().contains("Values.A"), "{error}");
        assert!(load(Some(&dir.path().join("none.json")), Vec::new()).is_err());
    }
}
