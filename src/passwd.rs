//! `shardmq passwd FILE USER`: adds, changes or deletes a user in a
//! password file (mosquitto's format, `$7$` hashes), the way
//! `mosquitto_passwd` does.

use std::io::{BufRead, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use shardmq::auth::password::{
    PasswordFile, StoredHash, ITERATIONS_DEFAULT, ITERATIONS_MAX, SALT_LEN,
};

/// Why the command failed; one line for the operator.
#[derive(Debug, thiserror::Error)]
pub enum PasswdError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    Parse {
        path: PathBuf,
        source: shardmq::auth::PasswordFileError,
    },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot read the password: {0}")]
    Prompt(std::io::Error),
    #[error("the passwords do not match")]
    Mismatch,
    #[error("a user name may not be empty nor contain ':' or a line break")]
    BadUser,
    #[error("user {0:?} is not in the file")]
    NoSuchUser(String),
    #[error("--iterations must be within 1..={ITERATIONS_MAX}")]
    BadIterations,
}

/// What to do to the file.
pub struct Passwd {
    pub file: PathBuf,
    pub user: String,
    pub delete: bool,
    pub stdin: bool,
    pub iterations: u32,
}

impl Passwd {
    pub fn run(&self) -> Result<(), PasswdError> {
        if self.user.is_empty() || self.user.contains([':', '\n', '\r']) {
            return Err(PasswdError::BadUser);
        }
        if !(1..=ITERATIONS_MAX).contains(&self.iterations) {
            return Err(PasswdError::BadIterations);
        }
        let mut file = read(&self.file)?;
        if self.delete {
            if !file.remove(&self.user) {
                return Err(PasswdError::NoSuchUser(self.user.clone()));
            }
        } else {
            let password = if self.stdin { read_stdin()? } else { prompt()? };
            let salt: [u8; SALT_LEN] = rand::random();
            file.set(
                &self.user,
                StoredHash::pbkdf2(password.as_bytes(), salt, self.iterations),
            );
        }
        write(&self.file, &file.to_text())
    }
}

pub const DEFAULT_ITERATIONS: u32 = ITERATIONS_DEFAULT;

fn read(path: &Path) -> Result<PasswordFile, PasswdError> {
    match std::fs::read_to_string(path) {
        Ok(text) => PasswordFile::parse(&text).map_err(|source| PasswdError::Parse {
            path: path.to_owned(),
            source,
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(PasswordFile::default()),
        Err(source) => Err(PasswdError::Read {
            path: path.to_owned(),
            source,
        }),
    }
}

/// Writes a sibling file with mode 0600 and renames it over `path`, so a
/// reader (a reload) sees the old file or the new one, never half of one.
fn write(path: &Path, text: &str) -> Result<(), PasswdError> {
    let fail = |source| PasswdError::Write {
        path: path.to_owned(),
        source,
    };
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(fail)?;
    f.write_all(text.as_bytes()).map_err(fail)?;
    f.sync_all().map_err(fail)?;
    std::fs::rename(&tmp, path).map_err(fail)
}

fn prompt() -> Result<String, PasswdError> {
    let first = rpassword::prompt_password("Password: ").map_err(PasswdError::Prompt)?;
    let second = rpassword::prompt_password("Reenter password: ").map_err(PasswdError::Prompt)?;
    if first != second {
        return Err(PasswdError::Mismatch);
    }
    Ok(first)
}

/// The first line of standard input, without its line break.
fn read_stdin() -> Result<String, PasswdError> {
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .map_err(PasswdError::Prompt)?;
    let trimmed = line.trim_end_matches(['\n', '\r']);
    Ok(trimmed.to_string())
}
