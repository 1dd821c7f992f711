//! Durable HTTP step registrations: the registrations file.
//!
//! Every HTTP step registered over the API (each version, with its whole registration
//! request) and every removal is written to one JSON file before the API answers, and a
//! starting server registers them all again, in order, before its worker runs a flow. So a
//! flow whose plan names an HTTP step's version finds it after a restart, and version
//! numbers go on where they were.
//!
//! **Where:** [`ServerConfig::steps_file`](crate::ServerConfig::steps_file); by default, for
//! an SQLite store, next to the store file ([`default_steps_file`]: `flowstate.db` keeps its
//! registrations in `flowstate.db.http-steps.json`). A PostgreSQL store has no default: unless
//! a file is given, registrations live in the process only (and each process on a shared
//! database has its own). One file belongs to one server process: two processes writing the
//! same file would each overwrite the other's registrations.
//!
//! **Format** ([`STEPS_FILE_FORMAT`]):
//!
//! ```json
//! {
//!   "format": 1,
//!   "registrations": [
//!     {"name": "quote", "version": 1, "request": {"name": "quote", "url": "http://…", …}}
//!   ],
//!   "removed": ["quote"]
//! }
//! ```
//!
//! `registrations` is every registered version in the order it was registered; `removed`
//! names the steps taken out of the catalog (`DELETE /api/v1/steps/{name}`) since their last
//! registration. A removal, as in the registry, keeps the versions (flows planned with them
//! go on, after a restart too, and a new registration takes the next version number); it only
//! stops new flows from planning the step.
//!
//! **Writes are atomic and durable:** the whole file is written to a temporary file in the
//! same directory, which is fsynced and renamed over the file, and then the directory is
//! fsynced. The API answers only after that; a write that fails answers 500 and changes
//! neither the file nor the registry. Writes are serialized (one lock around choosing the
//! version, writing and registering), so two registrations of one name never get the same
//! version.
//!
//! **Reading is strict:** a file over [`MAX_STEPS_FILE_BYTES`], with more than
//! [`MAX_STEP_REGISTRATIONS`] registrations, that does not parse, from a newer format, or
//! whose registrations the registry refuses stops the server from starting, with an error
//! naming the file (rather than start without steps that flows need).

use std::io::Write as _;
use std::path::{Path, PathBuf};

use flowstate::plan::Plans;
use serde::{Deserialize, Serialize};

use crate::http_steps::HttpStepRequest;

/// The format this server writes and the newest it reads.
pub const STEPS_FILE_FORMAT: u32 = 1;

/// Largest registrations file read or written, in bytes.
pub const MAX_STEPS_FILE_BYTES: u64 = 16 * 1024 * 1024;

/// Most registrations (step versions) the file may hold; a registration past it is refused
/// (409 `limit_reached`).
pub const MAX_STEP_REGISTRATIONS: usize = 10_000;

/// What [`default_steps_file`] appends to an SQLite store's file name.
pub const STEPS_FILE_SUFFIX: &str = ".http-steps.json";

/// Where the registrations of a server on `store` (a store URL) are kept by default: next to
/// an SQLite store's file (`STORE` + [`STEPS_FILE_SUFFIX`]); none for PostgreSQL.
#[must_use]
pub fn default_steps_file(store: &str) -> Option<PathBuf> {
    match flowstate::StoreUrl::parse(store) {
        Ok(flowstate::StoreUrl::Sqlite(path))
            if !path.as_os_str().is_empty() && path.as_os_str() != ":memory:" =>
        {
            let mut name = path.into_os_string();
            name.push(STEPS_FILE_SUFFIX);
            Some(PathBuf::from(name))
        }
        _ => None,
    }
}

/// The file's contents.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Document {
    format: u32,
    #[serde(default)]
    registrations: Vec<Registration>,
    #[serde(default)]
    removed: Vec<String>,
}

impl Default for Document {
    fn default() -> Self {
        Self {
            format: STEPS_FILE_FORMAT,
            registrations: Vec::new(),
            removed: Vec::new(),
        }
    }
}

/// One registered version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Registration {
    name: String,
    version: u32,
    request: HttpStepRequest,
}

/// Why a registration or removal could not be kept.
#[derive(Debug)]
pub(crate) enum SaveError {
    /// A limit would be passed; nothing was written.
    Limit(String),
    /// Writing failed; the file is as it was.
    Write(String),
}

/// The registrations of this server: the file (if any) and what it holds.
#[derive(Debug, Default)]
pub(crate) struct StepsFile {
    path: Option<PathBuf>,
    document: Document,
}

impl StepsFile {
    /// The newest version of `name` the file holds.
    pub(crate) fn newest_version(&self, name: &str) -> Option<u32> {
        self.document
            .registrations
            .iter()
            .filter(|r| r.name == name)
            .map(|r| r.version)
            .max()
    }

    /// Keeps a new registration (written and durable when it returns `Ok`).
    pub(crate) async fn add(
        &mut self,
        version: u32,
        request: &HttpStepRequest,
    ) -> Result<(), SaveError> {
        if self.document.registrations.len() >= MAX_STEP_REGISTRATIONS {
            return Err(SaveError::Limit(format!(
                "{MAX_STEP_REGISTRATIONS} HTTP step versions are registered, the most kept (MAX_STEP_REGISTRATIONS)"
            )));
        }
        let mut next = self.document.clone();
        next.registrations.push(Registration {
            name: request.name.clone(),
            version,
            request: request.clone(),
        });
        next.removed.retain(|name| *name != request.name);
        self.save(next).await
    }

    /// Keeps the removal of `name` from the catalog.
    pub(crate) async fn remove(&mut self, name: &str) -> Result<(), SaveError> {
        if self.document.removed.iter().any(|n| n == name) {
            return Ok(());
        }
        let mut next = self.document.clone();
        next.removed.push(name.to_owned());
        self.save(next).await
    }

    /// Writes `next` and, once it is durable, makes it the current contents.
    async fn save(&mut self, next: Document) -> Result<(), SaveError> {
        let Some(path) = self.path.clone() else {
            self.document = next;
            return Ok(());
        };
        let bytes = serde_json::to_vec_pretty(&next)
            .map_err(|error| SaveError::Write(format!("cannot encode it: {error}")))?;
        if bytes.len() as u64 > MAX_STEPS_FILE_BYTES {
            return Err(SaveError::Limit(format!(
                "the HTTP step registrations file {} would be {} bytes; at most {MAX_STEPS_FILE_BYTES} (MAX_STEPS_FILE_BYTES)",
                path.display(),
                bytes.len()
            )));
        }
        let previous = serde_json::to_vec_pretty(&self.document).unwrap_or_default();
        let written = tokio::task::spawn_blocking(move || {
            let result = write_atomically(&path, &bytes, &previous);
            (path, result)
        })
        .await;
        match written {
            Ok((_, Ok(()))) => {
                self.document = next;
                Ok(())
            }
            Ok((path, Err(error))) => Err(SaveError::Write(format!(
                "cannot write the HTTP step registrations file {}: {error}",
                path.display()
            ))),
            Err(error) => Err(SaveError::Write(format!(
                "writing the HTTP step registrations file failed: {error}"
            ))),
        }
    }

    /// Reads the file at `path` (none yet: no registrations) and registers every version in
    /// it with `plans`, in order, built by `build`; then removes the removed names from the
    /// catalog. An error names no file; the caller adds it.
    pub(crate) fn load(
        path: PathBuf,
        plans: &Plans,
        build: impl Fn(HttpStepRequest, u32) -> flowstate::plan::Step,
    ) -> Result<Self, String> {
        let document = read(&path)?;
        for (index, registration) in document.registrations.iter().enumerate() {
            let at = format!(
                "registration {} (step {:?} version {})",
                index + 1,
                registration.name,
                registration.version
            );
            if let Some(reason) = crate::http_steps::invalid_url(&registration.request.url) {
                return Err(format!("{at}: {reason}"));
            }
            if plans.version_registered(&registration.name, registration.version) {
                return Err(format!(
                    "{at}: this version of {:?} is registered already, by the server itself (an example step of that name; was this HTTP step registered while the examples were off?): start with the examples off (--no-examples), or remove the step from the file",
                    registration.name
                ));
            }
            plans
                .register(build(registration.request.clone(), registration.version))
                .map_err(|error| format!("{at}: {error}"))?;
        }
        for name in &document.removed {
            plans.unregister(name);
        }
        Ok(Self {
            path: Some(path),
            document,
        })
    }
}

/// The checked contents of the file at `path` (empty if there is none).
fn read(path: &Path) -> Result<Document, String> {
    let parent = parent(path);
    if !parent.is_dir() {
        return Err(format!("its directory {} does not exist", parent.display()));
    }
    remove_stale_temporaries(path);
    let file = match std::fs::File::open(path) {
        Ok(file) => file,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            return Ok(Document::default())
        }
        Err(error) => return Err(format!("cannot read it: {error}")),
    };
    let size = file
        .metadata()
        .map_err(|error| format!("cannot read it: {error}"))?
        .len();
    if size > MAX_STEPS_FILE_BYTES {
        return Err(format!(
            "it is {size} bytes; at most {MAX_STEPS_FILE_BYTES} (MAX_STEPS_FILE_BYTES) are read"
        ));
    }
    let mut text = String::new();
    std::io::Read::read_to_string(
        &mut std::io::Read::take(file, MAX_STEPS_FILE_BYTES + 1),
        &mut text,
    )
    .map_err(|error| format!("cannot read it: {error}"))?;
    if text.len() as u64 > MAX_STEPS_FILE_BYTES {
        return Err(format!(
            "it is over {MAX_STEPS_FILE_BYTES} bytes (MAX_STEPS_FILE_BYTES)"
        ));
    }
    parse(&text)
}

/// Parses and checks a file's text.
fn parse(text: &str) -> Result<Document, String> {
    let value: serde_json::Value =
        serde_json::from_str(text).map_err(|error| format!("it is not JSON: {error}"))?;
    let format = value
        .get("format")
        .and_then(serde_json::Value::as_u64)
        .ok_or("it has no \"format\" number, so it is not a registrations file")?;
    if format > u64::from(STEPS_FILE_FORMAT) {
        return Err(format!(
            "it is in format {format}, written by a newer flowstate; this one reads format {STEPS_FILE_FORMAT} and older"
        ));
    }
    if format == 0 {
        return Err("format 0 does not exist".to_owned());
    }
    let document: Document = serde_json::from_value(value)
        .map_err(|error| format!("it is not a registrations file: {error}"))?;
    if document.registrations.len() > MAX_STEP_REGISTRATIONS {
        return Err(format!(
            "it holds {} registrations; at most {MAX_STEP_REGISTRATIONS} (MAX_STEP_REGISTRATIONS)",
            document.registrations.len()
        ));
    }
    if document.removed.len() > MAX_STEP_REGISTRATIONS {
        return Err(format!(
            "it names {} removed steps; at most {MAX_STEP_REGISTRATIONS} (MAX_STEP_REGISTRATIONS)",
            document.removed.len()
        ));
    }
    let mut newest = std::collections::HashMap::<&str, u32>::new();
    for (index, registration) in document.registrations.iter().enumerate() {
        let at = index + 1;
        if registration.name != registration.request.name {
            return Err(format!(
                "registration {at} is named {:?} but its request {:?}",
                registration.name, registration.request.name
            ));
        }
        let before = newest.insert(&registration.name, registration.version);
        if registration.version == 0 || before.is_some_and(|v| v >= registration.version) {
            return Err(format!(
                "registration {at}: version {} of step {:?} does not follow version {}",
                registration.version,
                registration.name,
                before.unwrap_or(0)
            ));
        }
    }
    Ok(document)
}

fn parent(path: &Path) -> &Path {
    match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    }
}

/// The prefix of `path`'s temporary files (`.NAME.` … `.tmp`).
fn temporary_prefix(path: &Path) -> String {
    let name = path
        .file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_default();
    format!(".{name}.")
}

/// Removes temporary files a crash left between writing and renaming.
fn remove_stale_temporaries(path: &Path) {
    let prefix = temporary_prefix(path);
    let Ok(entries) = std::fs::read_dir(parent(path)) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with(&prefix) && name.ends_with(".tmp") {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

/// Replaces the file at `path` by `bytes`: a temporary file in the same directory, fsynced,
/// renamed over it, then the directory fsynced. If the directory cannot be fsynced after the
/// rename, `previous` is put back the same way (best effort) before the error is returned.
fn write_atomically(path: &Path, bytes: &[u8], previous: &[u8]) -> std::io::Result<()> {
    replace(path, bytes)?;
    if let Err(error) = sync_directory(parent(path)) {
        let _ = replace(path, previous).and_then(|()| sync_directory(parent(path)));
        return Err(error);
    }
    Ok(())
}

fn replace(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let temporary = parent(path).join(format!(
        "{}{:016x}.tmp",
        temporary_prefix(path),
        rand::random::<u64>()
    ));
    let written = (|| {
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        {
            // The file holds URLs, which may carry credentials.
            use std::os::unix::fs::OpenOptionsExt as _;
            options.mode(0o600);
        }
        let mut file = options.open(&temporary)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        drop(file);
        std::fs::rename(&temporary, path)
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&temporary);
    }
    written
}

fn sync_directory(directory: &Path) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        std::fs::File::open(directory)?.sync_all()
    }
    #[cfg(not(unix))]
    {
        let _ = directory;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_file_is_next_to_an_sqlite_store_only() {
        assert_eq!(
            default_steps_file("flowstate.db"),
            Some(PathBuf::from("flowstate.db.http-steps.json"))
        );
        assert_eq!(
            default_steps_file("sqlite:///var/lib/f.db"),
            Some(PathBuf::from("/var/lib/f.db.http-steps.json"))
        );
        assert_eq!(default_steps_file("postgres://u@h/db"), None);
        assert_eq!(default_steps_file("postgresql://u@h/db"), None);
    }

    #[test]
    fn bad_files_are_refused_with_a_reason() {
        let refused = |text: &str| parse(text).err().unwrap_or_default();
        assert!(refused("not json").contains("not JSON"));
        assert!(refused("{}").contains("\"format\""));
        assert!(refused(r#"{"format": 2}"#).contains("newer flowstate"));
        assert!(refused(r#"{"format": 0}"#).contains("format 0"));
        assert!(refused(r#"{"format": 1, "extra": true}"#).contains("not a registrations file"));
        let twice = r#"{"format": 1, "registrations": [
            {"name": "a", "version": 1, "request": {"name": "a", "outputs": ["x"], "url": "http://h/"}},
            {"name": "a", "version": 1, "request": {"name": "a", "outputs": ["x"], "url": "http://h/"}}
        ]}"#;
        assert!(refused(twice).contains("does not follow version 1"));
        let misnamed = r#"{"format": 1, "registrations": [
            {"name": "a", "version": 1, "request": {"name": "b", "outputs": ["x"], "url": "http://h/"}}
        ]}"#;
        assert!(refused(misnamed).contains("is named \"a\""));
        assert!(parse(r#"{"format": 1}"#).is_ok());
    }
}
