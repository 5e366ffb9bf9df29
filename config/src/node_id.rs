//! `node_id = "auto"`: generate an id once and keep it in `<data_dir>/.node-id` (the seed's
//! behaviour), so a node keeps its identity across restarts.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use crate::error::ConfigError;
use crate::validate::validate_node_id;
use crate::Config;

/// The file, relative to `data_dir`.
pub const NODE_ID_FILE: &str = ".node-id";

impl Config {
    /// Replaces `node_id = "auto"` with the id persisted in `<data_dir>/.node-id`, generating
    /// `node-<12 lowercase hex>` and writing it (temp file + rename) the first time. An explicit
    /// id is validated and kept; the file is not touched. Returns the id.
    pub fn resolve_node_id(&mut self) -> Result<String, ConfigError> {
        if self.node_id != "auto" {
            validate_node_id(&self.node_id).map_err(|message| ConfigError::InvalidValue {
                location: "config".into(),
                key: "node_id".into(),
                message,
            })?;
            return Ok(self.node_id.clone());
        }
        let path = self.data_dir.join(NODE_ID_FILE);
        let id = match fs::read_to_string(&path) {
            Ok(content) => {
                let id = content.trim();
                validate_node_id(id).map_err(|message| ConfigError::NodeIdFile {
                    path: path.clone(),
                    message,
                })?;
                id.to_string()
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let id = generate();
                persist(&self.data_dir, &path, &id)?;
                id
            }
            Err(io) => {
                return Err(ConfigError::NodeIdIo {
                    path,
                    action: "cannot read",
                    io,
                })
            }
        };
        self.node_id = id.clone();
        Ok(id)
    }
}

fn generate() -> String {
    let bytes: [u8; 6] = rand::random();
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!("node-{hex}")
}

/// Write to a temp file in the same directory, fsync, rename: a crash never leaves a torn id.
fn io_err(path: &Path, action: &'static str) -> impl FnOnce(io::Error) -> ConfigError {
    let path = path.to_path_buf();
    move |io| ConfigError::NodeIdIo { path, action, io }
}

fn persist(dir: &Path, path: &Path, id: &str) -> Result<(), ConfigError> {
    fs::create_dir_all(dir).map_err(io_err(dir, "cannot create data_dir"))?;
    let tmp: PathBuf = dir.join(format!("{NODE_ID_FILE}.tmp-{}", std::process::id()));
    let write = || -> io::Result<()> {
        let mut f = fs::File::create(&tmp)?;
        f.write_all(format!("{id}\n").as_bytes())?;
        f.sync_all()
    };
    if let Err(e) = write() {
        let _ = fs::remove_file(&tmp);
        return Err(io_err(&tmp, "cannot write")(e));
    }
    fs::rename(&tmp, path).map_err(|e| {
        let _ = fs::remove_file(&tmp);
        io_err(path, "cannot rename temp file into place")(e)
    })
}
