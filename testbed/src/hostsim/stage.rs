//! Staging a function app for a test: a copy of an app template (host.json, function
//! folders, anything else in it) in a fresh temporary folder, with the handler executable
//! copied in under the name host.json expects and its execute bit set.
//!
//! Guarantees: the template is never modified; the staged folder is deleted when the returned
//! [`tempfile::TempDir`] is dropped; symbolic links in the template are copied as the files
//! they point to; the folders named in [`SKIPPED`] (build output, VCS data) are not copied.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use anyhow::Context;

/// Folder names never copied from a template.
pub const SKIPPED: [&str; 3] = ["target", ".git", "node_modules"];
/// The mode given to the staged executable (rwxr-xr-x).
pub const EXECUTABLE_MODE: u32 = 0o755;

/// Copies `template` into a new temporary folder and the handler `executable` into it as
/// `executable_name` (e.g. `handler`, the host.json `defaultExecutablePath`), executable.
pub fn stage_app(
    template: &Path,
    executable: &Path,
    executable_name: &str,
) -> anyhow::Result<tempfile::TempDir> {
    let staged = tempfile::tempdir()?;
    copy_tree(template, staged.path())
        .with_context(|| format!("copying the app template {}", template.display()))?;
    let target = staged.path().join(executable_name);
    std::fs::copy(executable, &target).with_context(|| {
        format!(
            "copying the handler {} to {}",
            executable.display(),
            target.display()
        )
    })?;
    std::fs::set_permissions(&target, std::fs::Permissions::from_mode(EXECUTABLE_MODE))?;
    Ok(staged)
}

fn copy_tree(from: &Path, to: &Path) -> anyhow::Result<()> {
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let name = entry.file_name();
        let source = entry.path();
        let destination = to.join(&name);
        // `metadata` follows symbolic links.
        let metadata = std::fs::metadata(&source)?;
        if metadata.is_dir() {
            if SKIPPED.iter().any(|s| name == *s) {
                continue;
            }
            std::fs::create_dir_all(&destination)?;
            copy_tree(&source, &destination)?;
        } else {
            std::fs::copy(&source, &destination)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copies_the_template_and_an_executable_handler() {
        let template = tempfile::tempdir().unwrap();
        std::fs::write(template.path().join("host.json"), "{}").unwrap();
        std::fs::create_dir_all(template.path().join("Fn")).unwrap();
        std::fs::write(template.path().join("Fn/function.json"), "{}").unwrap();
        std::fs::create_dir_all(template.path().join("target/debug")).unwrap();
        let exe = template.path().join("target/debug/built");
        std::fs::write(&exe, "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o644)).unwrap();

        let staged = stage_app(template.path(), &exe, "handler").unwrap();
        assert!(staged.path().join("host.json").is_file());
        assert!(staged.path().join("Fn/function.json").is_file());
        assert!(!staged.path().join("target").exists());
        let mode = std::fs::metadata(staged.path().join("handler"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, EXECUTABLE_MODE);
    }
}
