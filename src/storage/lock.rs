//! One daemon per storage root: an exclusive advisory lock on `{root}/.lock`,
//! held for the life of the process and released by the kernel when it dies
//! (also on kill -9), so a crash never leaves a stale lock behind.
#![allow(clippy::disallowed_methods)] // start-up only, before serving (clippy.toml)

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::Path;

#[derive(Debug)]
pub struct RootLock {
    _file: File,
}

impl RootLock {
    pub fn acquire(root: &Path) -> io::Result<Self> {
        let path = root.join(".lock");
        let mut file = OpenOptions::new().create(true).truncate(false).read(true).write(true).open(&path)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                let holder = std::fs::read_to_string(&path).unwrap_or_default();
                return Err(io::Error::new(
                    io::ErrorKind::AddrInUse,
                    format!(
                        "storage root {} is in use by another vidcache (pid {}); refusing to start",
                        root.display(),
                        holder.trim()
                    ),
                ));
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(e),
        }
        file.set_len(0)?;
        write!(file, "{}", std::process::id())?;
        Ok(Self { _file: file })
    }
}
