//! `Tenant`: whose videos a caller sees and in whose name it writes
//! (section 8, projects as tenants).

/// The project of an open daemon's anonymous callers, and of videos stored
/// before projects existed.
pub const DEFAULT_PROJECT: &str = "default";

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Tenant {
    /// An anonymous caller of an open daemon (no keys, loopback): the
    /// operator. Sees every video; what it stores is `default`'s.
    Operator,
    /// A project's key or signed URL: sees what the project holds, and
    /// nothing else.
    Project(String),
    /// A caller with no identity on a daemon that has keys (a public route,
    /// a presigned part, a playback token): sees no video by itself.
    Nobody,
}

impl Tenant {
    /// The project whose videos this caller's uploads become.
    pub fn project(&self) -> &str {
        match self {
            Tenant::Operator | Tenant::Nobody => DEFAULT_PROJECT,
            Tenant::Project(p) => p,
        }
    }

    /// The project a read is confined to; `None`: every video. Nobody is
    /// confined to a project no one can name (the empty one).
    pub fn confined_to(&self) -> Option<&str> {
        match self {
            Tenant::Operator => None,
            Tenant::Project(p) => Some(p),
            Tenant::Nobody => Some(""),
        }
    }
}
