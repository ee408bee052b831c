//! Who may do what (section 8 of the contract).
//!
//! Every route is registered with a [`Rule`] (`routes::table`), and one
//! middleware (`guard`) admits or refuses each request by its rule before
//! any handler runs, so a handler never decides on its own whether to check.
//! A request is admitted as a [`Caller`]: an API key with its project and
//! scopes, or anonymous while the daemon is open (no keys at all, and
//! listening on loopback or allowed by `auth.allow_anonymous`).
//!
//! Keys come from configuration (`[[auth.api_keys]]`) and from `admin`
//! callers at run time (`/api/v1/keys`, kept in the database). Neither kind
//! keeps its secret: the ring holds HMAC-SHA256(server secret, id, secret)
//! and compares MACs in constant time, and an unknown id costs the same MAC.

mod grant;
mod playback;
mod presign;

pub use crate::config::Scope;
pub use grant::UploadGrant;
pub use playback::{PlaybackGrant, TokenError};

use crate::config::AuthSettings;
use crate::error::ApiError;
use crate::storage::{RepoError, Repository, StoredKey};
use actix_web::http::{StatusCode, header};
use actix_web::{FromRequest, HttpMessage, HttpRequest};
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

type HmacSha256 = Hmac<Sha256>;

/// A set of scopes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Scopes(u8);

impl Scopes {
    pub fn of(scopes: &[Scope]) -> Self {
        Self(scopes.iter().fold(0, |bits, s| bits | Self::bit(*s)))
    }

    pub fn all() -> Self {
        Self::of(&Scope::ALL)
    }

    fn bit(scope: Scope) -> u8 {
        1 << (scope as u8)
    }

    pub fn contains(self, scope: Scope) -> bool {
        self.0 & Self::bit(scope) != 0
    }

    pub fn names(self) -> Vec<&'static str> {
        Scope::ALL.into_iter().filter(|s| self.contains(*s)).map(Scope::as_str).collect()
    }

    /// A comma-separated list as stored; unknown names are dropped.
    fn parse_list(list: &str) -> Self {
        Self::of(&list.split(',').filter_map(|s| Scope::parse(s.trim())).collect::<Vec<_>>())
    }
}

/// What a route needs from its caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rule {
    /// Anyone: health, the pages and their assets, CORS preflights.
    Public,
    /// A key with this scope (or anyone while the daemon is open).
    Scope(Scope),
    /// A key with this scope whose project is the path's `{project_id}`.
    ProjectScope(Scope),
    /// The URL carries its own signature, which its handler checks (a
    /// presigned multipart part).
    Presigned,
    /// A playback token in the path (`{token}`), bound to the path's
    /// `{hash}`; checked by the guard.
    Playback,
    /// An upload door's route on one upload (`{upload_id}`): a key with
    /// `upload`, or a signed upload URL's token for that upload.
    Door,
    /// The route that creates a door's upload: a key with `upload`, or an
    /// unexpired signed upload URL's token (which then names the upload).
    DoorCreate,
    /// A video's media: a key with `read`, or none at all for a `public`
    /// video (which the handler decides; refused as a missing key otherwise).
    Media,
}

/// Who is calling, as admitted by the guard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// An open daemon's caller (no keys; loopback or allowed): the operator.
    Anonymous,
    /// No identity, on a daemon with keys: a public route, a presigned part,
    /// a playback token. Sees no video by itself.
    Public,
    Key(Grant),
    /// A signed upload URL's token, for its one upload.
    Upload(Box<UploadGrant>),
}

/// An API key that proved its secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    pub key_id: String,
    pub project: String,
    pub scopes: Scopes,
}

impl Caller {
    pub fn key_id(&self) -> Option<&str> {
        match self {
            Caller::Anonymous | Caller::Public | Caller::Upload(_) => None,
            Caller::Key(grant) => Some(&grant.key_id),
        }
    }

    pub fn project(&self) -> Option<&str> {
        match self {
            Caller::Anonymous | Caller::Public => None,
            Caller::Key(grant) => Some(&grant.project),
            Caller::Upload(grant) => grant.project.as_deref(),
        }
    }

    /// Whose videos this caller sees, and in whose name it stores.
    pub fn tenant(&self) -> crate::domain::Tenant {
        use crate::domain::{DEFAULT_PROJECT, Tenant};
        match self {
            Caller::Anonymous => Tenant::Operator,
            Caller::Public => Tenant::Nobody,
            Caller::Key(grant) => Tenant::Project(grant.project.clone()),
            Caller::Upload(grant) => Tenant::Project(grant.project.clone().unwrap_or_else(|| DEFAULT_PROJECT.into())),
        }
    }

    /// The upload grant a signed upload URL's caller came with.
    pub fn upload_grant(&self) -> Option<&UploadGrant> {
        match self {
            Caller::Upload(grant) => Some(grant),
            _ => None,
        }
    }
}

/// Handlers take the caller the guard admitted. A request that reached a
/// handler without one was routed around the guard: refused, not trusted.
impl FromRequest for Caller {
    type Error = ApiError;
    type Future = std::future::Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut actix_web::dev::Payload) -> Self::Future {
        std::future::ready(
            req.extensions()
                .get::<Caller>()
                .cloned()
                .ok_or_else(|| ApiError::new(StatusCode::FORBIDDEN, "no-access-rule", "this route has no access rule")),
        )
    }
}

/// A key as the ring holds it.
#[derive(Debug, Clone)]
struct RingKey {
    project: String,
    scopes: Scopes,
    mac: [u8; 32],
    /// Minted at run time (and so revocable at run time).
    runtime: bool,
    label: Option<String>,
    created_at: Option<chrono::DateTime<chrono::Utc>>,
}

/// A key as `GET /api/v1/keys` lists it: never its secret.
#[derive(Debug, Clone, serde::Serialize)]
pub struct KeyInfo {
    pub id: String,
    pub project_id: String,
    pub scopes: Vec<&'static str>,
    /// `config` or `api`.
    pub source: &'static str,
    pub label: Option<String>,
    pub created_at: Option<String>,
}

/// Credentials as a request carries them.
enum Credentials {
    None,
    Given { id: String, secret: String, scheme: &'static str },
}

#[derive(Clone)]
pub struct Auth {
    ring: Arc<RwLock<HashMap<String, RingKey>>>,
    secret: Arc<[u8]>,
    pub presign_ttl: Duration,
    /// Serving anonymously is allowed while there are no keys (loopback or
    /// `auth.allow_anonymous`). Revoking the last key of a daemon on a
    /// public address does not open it: every call is refused instead.
    anonymous: bool,
}

impl Auth {
    /// The server secret (configured, or kept under the storage root: made
    /// on first start, so presigned URLs and key MACs survive a restart),
    /// the configured keys and those minted earlier. Start-up only: it reads
    /// and writes a file.
    #[allow(clippy::disallowed_methods)]
    pub async fn start(settings: &AuthSettings, bind: &str, root: &Path, repo: &Repository) -> anyhow::Result<Self> {
        let secret = if settings.presign_secret.is_empty() {
            let path = root.join(".presign-secret");
            match std::fs::read(&path) {
                Ok(secret) if secret.len() >= 32 => secret,
                _ => {
                    let secret: [u8; 32] = rand::random();
                    let encoded = hex::encode(secret).into_bytes();
                    std::fs::write(&path, &encoded)?;
                    encoded
                }
            }
        } else {
            settings.presign_secret.as_bytes().to_vec()
        };
        let mut auth = Self::with_secret(secret, settings);
        auth.anonymous = anonymous_allowed(bind, settings.allow_anonymous);
        auth.refresh(repo).await?;
        check_exposure(bind, !auth.is_empty(), settings.allow_anonymous)?;
        Ok(auth)
    }

    /// Loads the keys minted at run time from the database, replacing the
    /// ring's (configured keys stay). Start-up calls it, then a task every
    /// `auth.key_refresh_secs`, so that keys minted or revoked by another
    /// daemon on the same database reach this one.
    pub async fn refresh(&self, repo: &Repository) -> Result<(), RepoError> {
        let mut minted = HashMap::new();
        for key in repo.api_keys().await? {
            let Some(mac) = hex::decode(&key.mac).ok().and_then(|m| <[u8; 32]>::try_from(m).ok()) else {
                tracing::warn!(key_id = %key.id, "a stored API key's MAC is damaged; the key is ignored");
                continue;
            };
            let ring_key = RingKey {
                project: key.project_id,
                scopes: Scopes::parse_list(&key.scopes),
                mac,
                runtime: true,
                label: key.label,
                created_at: Some(key.created_at),
            };
            minted.insert(key.id, ring_key);
        }
        let mut ring = self.write();
        ring.retain(|_, key| !key.runtime);
        for (id, key) in minted {
            // A configured key of the same id wins.
            ring.entry(id).or_insert(key);
        }
        Ok(())
    }

    fn with_secret(secret: Vec<u8>, settings: &AuthSettings) -> Self {
        let auth = Self {
            ring: Arc::default(),
            secret: secret.into(),
            presign_ttl: Duration::from_secs(settings.presign_ttl_secs),
            anonymous: true,
        };
        let configured = settings
            .api_keys
            .iter()
            .map(|k| {
                let key = RingKey {
                    project: k.project_id.clone(),
                    scopes: Scopes::of(&k.scopes),
                    mac: auth.key_mac(&k.id, &k.key),
                    runtime: false,
                    label: None,
                    created_at: None,
                };
                (k.id.clone(), key)
            })
            .collect();
        *auth.write() = configured;
        auth
    }

    /// A ring of `keys` under `secret`, with nothing from a database (unit
    /// tests, and `examples/key_checks.rs`).
    pub fn in_memory(keys: &[crate::config::ApiKey], secret: &[u8]) -> Self {
        let settings = AuthSettings {
            api_keys: keys.to_vec(),
            presign_secret: String::new(),
            presign_ttl_secs: 60,
            allow_anonymous: false,
            playback_ttl_secs: 60,
            public_projects: Vec::new(),
            key_refresh_secs: 10,
        };
        Self::with_secret(secret.to_vec(), &settings)
    }

    #[cfg(test)]
    pub(crate) fn for_tests(keys: &[crate::config::ApiKey]) -> Self {
        Self::in_memory(keys, b"test-secret")
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<String, RingKey>> {
        self.ring.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<String, RingKey>> {
        self.ring.write().unwrap_or_else(|e| e.into_inner())
    }

    fn mac(&self) -> HmacSha256 {
        HmacSha256::new_from_slice(&self.secret).expect("HMAC takes keys of any length")
    }

    fn key_mac(&self, id: &str, secret: &str) -> [u8; 32] {
        let mut mac = self.mac();
        mac.update(b"vidcache api key\0");
        mac.update(id.as_bytes());
        mac.update(b"\0");
        mac.update(secret.as_bytes());
        mac.finalize().into_bytes().into()
    }

    /// With no key at all, the daemon serves anonymously where that is
    /// allowed (loopback, or `auth.allow_anonymous`).
    pub fn is_open(&self) -> bool {
        self.anonymous && self.is_empty()
    }

    fn is_empty(&self) -> bool {
        self.read().is_empty()
    }

    /// Admits a request under `rule`, or answers why not: 401 for missing or
    /// bad credentials, 403 for a key without the scope or of another project.
    /// `project` is the path's `{project_id}`, for `Rule::ProjectScope`.
    pub fn admit(&self, rule: Rule, req: &HttpRequest, project: Option<&str>) -> Result<Caller, ApiError> {
        // An open daemon's callers are its operator, whatever the rule.
        if self.is_open() {
            return Ok(Caller::Anonymous);
        }
        let scope = match rule {
            Rule::Public | Rule::Presigned | Rule::Playback => return Ok(Caller::Public),
            Rule::Scope(scope) | Rule::ProjectScope(scope) => scope,
            Rule::Door | Rule::DoorCreate => Scope::Upload,
            Rule::Media => Scope::Read,
        };
        let grant = match credentials(req)? {
            // Public media needs no key: the handler looks the video up.
            Credentials::None if rule == Rule::Media => return Ok(Caller::Public),
            Credentials::None => {
                return Err(unauthorized(
                    "this route needs an API key: HTTP Basic id:secret, or Authorization: Bearer id.secret",
                ));
            }
            Credentials::Given { id, secret, scheme } => self
                .check(&id, &secret)
                .ok_or_else(|| unauthorized(&format!("unknown API key or wrong secret ({scheme} credentials)")))?,
        };
        if !grant.scopes.contains(scope) {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "missing-scope",
                format!("this API key does not have the `{}` scope", scope.as_str()),
            ));
        }
        if rule == Rule::ProjectScope(scope) && project != Some(grant.project.as_str()) {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "wrong-project",
                "this API key belongs to another project",
            ));
        }
        Ok(Caller::Key(grant))
    }

    /// The key `id` if `secret` is its secret. The MAC is computed and
    /// compared (in constant time) whether or not the id exists.
    pub fn check(&self, id: &str, secret: &str) -> Option<Grant> {
        let given = self.key_mac(id, secret);
        let ring = self.read();
        let (stored, key) = match ring.get(id) {
            Some(key) => (key.mac, Some(key)),
            None => ([0u8; 32], None),
        };
        let matches = constant_time_eq(&given, &stored);
        match key {
            Some(key) if matches => {
                Some(Grant { key_id: id.to_owned(), project: key.project.clone(), scopes: key.scopes })
            }
            _ => None,
        }
    }

    /// Mints a key of `project` with `scopes`: the stored record and the
    /// secret, which is shown to the caller once and kept nowhere.
    pub async fn mint(
        &self,
        repo: &Repository,
        project: &str,
        scopes: Scopes,
        label: Option<String>,
        created_by: Option<String>,
    ) -> Result<(StoredKey, String), RepoError> {
        let id = format!("vk_{}", hex::encode(rand::random::<[u8; 8]>()));
        let secret = hex::encode(rand::random::<[u8; 24]>());
        let mac = self.key_mac(&id, &secret);
        let key = StoredKey {
            id: id.clone(),
            project_id: project.to_owned(),
            scopes: scopes.names().join(","),
            mac: hex::encode(mac),
            label: label.clone(),
            created_by,
            created_at: chrono::Utc::now(),
        };
        repo.insert_api_key(&key).await?;
        self.write().insert(
            id,
            RingKey {
                project: project.to_owned(),
                scopes,
                mac,
                runtime: true,
                label,
                created_at: Some(key.created_at),
            },
        );
        Ok((key, secret))
    }

    /// Revokes a key minted at run time. `Ok(false)`: no such key of `project`
    /// (configured keys are changed in configuration, not here).
    pub async fn revoke(&self, repo: &Repository, id: &str, project: Option<&str>) -> Result<bool, RepoError> {
        let revocable = self.read().get(id).is_some_and(|key| key.runtime && project.is_none_or(|p| p == key.project));
        if !revocable {
            return Ok(false);
        }
        // Out of the database first: killed in between, the restart (and
        // every other daemon's next refresh) no longer loads it.
        let removed = repo.delete_api_key(id).await?;
        self.write().remove(id);
        Ok(removed)
    }

    /// Every key of `project` (all keys for `None`), without secrets.
    pub fn list(&self, project: Option<&str>) -> Vec<KeyInfo> {
        let mut keys: Vec<KeyInfo> = self
            .read()
            .iter()
            .filter(|(_, key)| project.is_none_or(|p| p == key.project))
            .map(|(id, key)| KeyInfo {
                id: id.clone(),
                project_id: key.project.clone(),
                scopes: key.scopes.names(),
                source: if key.runtime { "api" } else { "config" },
                label: key.label.clone(),
                created_at: key.created_at.map(|t| t.to_rfc3339()),
            })
            .collect();
        keys.sort_by(|a, b| a.id.cmp(&b.id));
        keys
    }
}

pub(crate) fn unauthorized(why: &str) -> ApiError {
    ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", why)
        .with_header("WWW-Authenticate", "Basic realm=\"vidcache\", Bearer realm=\"vidcache\"")
}

/// The credentials of the `Authorization` header: HTTP Basic `id:secret`
/// or `Bearer id.secret`. Malformed ones answer 401.
fn credentials(req: &HttpRequest) -> Result<Credentials, ApiError> {
    let Some(raw) = req.headers().get(header::AUTHORIZATION) else {
        return Ok(Credentials::None);
    };
    let raw = raw.to_str().map_err(|_| unauthorized("the Authorization header is not text"))?;
    let (scheme, value) = raw.split_once(' ').unwrap_or((raw, ""));
    if scheme.eq_ignore_ascii_case("basic") {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(value.trim())
            .ok()
            .and_then(|d| String::from_utf8(d).ok())
            .ok_or_else(|| unauthorized("the Authorization header is not valid Basic credentials"))?;
        let (id, secret) =
            decoded.split_once(':').ok_or_else(|| unauthorized("Basic credentials must be id:secret"))?;
        // Percent-decoded: a client given `http://ID:SECRET@host` may send
        // the userinfo as written in the URL.
        let (id, secret) = (percent_decoded(id), percent_decoded(secret));
        Ok(Credentials::Given { id, secret, scheme: "Basic" })
    } else if scheme.eq_ignore_ascii_case("bearer") {
        let (id, secret) = value
            .trim()
            .split_once('.')
            .ok_or_else(|| unauthorized("a Bearer token is the key id and its secret joined by a dot"))?;
        Ok(Credentials::Given { id: id.to_owned(), secret: secret.to_owned(), scheme: "Bearer" })
    } else {
        Err(unauthorized("only HTTP Basic and Bearer credentials are accepted"))
    }
}

fn percent_decoded(s: &str) -> String {
    if !s.contains('%') {
        return s.to_owned();
    }
    percent_encoding::percent_decode_str(s).decode_utf8_lossy().into_owned()
}

fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// Equal without an early exit on the first differing byte.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Whether the daemon may serve anonymously while it has no keys: on a
/// loopback address, or when the operator said so.
fn anonymous_allowed(bind: &str, allow_anonymous: bool) -> bool {
    allow_anonymous
        || bind
            .parse::<std::net::SocketAddr>()
            .map(|a| a.ip().is_loopback())
            .unwrap_or_else(|_| bind.starts_with("localhost:"))
}

/// Refuses to serve anonymously on a non-loopback address: with no keys,
/// anyone who can reach the port could read, upload and delete.
fn check_exposure(bind: &str, has_keys: bool, allow_anonymous: bool) -> anyhow::Result<()> {
    if has_keys || anonymous_allowed(bind, allow_anonymous) {
        return Ok(());
    }
    anyhow::bail!(
        "refusing to serve on {bind} with no API keys: anyone who reaches it could read, upload and delete \
         every video. Configure [[auth.api_keys]] (see the README), bind a loopback address, or set \
         auth.allow_anonymous = true if the network in front of it does the checking"
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ApiKey;
    use actix_web::test::TestRequest;

    fn key(id: &str, secret: &str, project: &str, scopes: &[Scope]) -> ApiKey {
        ApiKey { id: id.into(), key: secret.into(), project_id: project.into(), scopes: scopes.to_vec() }
    }

    #[test]
    fn basic_and_bearer_admit_the_same_key_and_wrong_secrets_do_not() {
        let auth = Auth::for_tests(&[key("k1", "s1", "p1", &Scope::ALL)]);
        let basic = TestRequest::default().insert_header(("Authorization", "Basic azE6czE=")).to_http_request();
        let bearer = TestRequest::default().insert_header(("Authorization", "Bearer k1.s1")).to_http_request();
        for req in [basic, bearer] {
            let caller = auth.admit(Rule::Scope(Scope::Read), &req, None).unwrap();
            assert_eq!(caller.project(), Some("p1"));
        }
        let wrong = TestRequest::default().insert_header(("Authorization", "Bearer k1.s2")).to_http_request();
        assert_eq!(auth.admit(Rule::Scope(Scope::Read), &wrong, None).unwrap_err().status, 401);
        let unknown = TestRequest::default().insert_header(("Authorization", "Bearer k9.s1")).to_http_request();
        assert_eq!(auth.admit(Rule::Scope(Scope::Read), &unknown, None).unwrap_err().status, 401);
        let none = TestRequest::default().to_http_request();
        assert_eq!(auth.admit(Rule::Scope(Scope::Read), &none, None).unwrap_err().status, 401);
        assert_eq!(auth.admit(Rule::Public, &none, None).unwrap(), Caller::Public);
    }

    #[test]
    fn a_key_without_the_scope_is_forbidden() {
        let auth = Auth::for_tests(&[key("r", "s", "p1", &[Scope::Read])]);
        let req = TestRequest::default().insert_header(("Authorization", "Bearer r.s")).to_http_request();
        assert!(auth.admit(Rule::Scope(Scope::Read), &req, None).is_ok());
        let err = auth.admit(Rule::Scope(Scope::Delete), &req, None).unwrap_err();
        assert_eq!((err.status.as_u16(), err.code), (403, "missing-scope"));
    }

    #[test]
    fn with_no_keys_every_caller_is_anonymous_and_admitted() {
        let auth = Auth::for_tests(&[]);
        assert!(auth.is_open());
        let req = TestRequest::default().to_http_request();
        assert_eq!(auth.admit(Rule::Scope(Scope::Admin), &req, None).unwrap(), Caller::Anonymous);
    }

    #[test]
    fn scopes_round_trip_through_their_stored_form() {
        let scopes = Scopes::of(&[Scope::Read, Scope::Delete]);
        assert_eq!(Scopes::parse_list(&scopes.names().join(",")), scopes);
        assert!(!scopes.contains(Scope::Upload));
        assert_eq!(Scopes::all().names(), vec!["upload", "read", "delete", "admin"]);
    }

    #[test]
    fn a_public_bind_without_keys_is_refused() {
        assert!(check_exposure("127.0.0.1:8020", false, false).is_ok());
        assert!(check_exposure("[::1]:8020", false, false).is_ok());
        assert!(check_exposure("localhost:8020", false, false).is_ok());
        let err = check_exposure("0.0.0.0:8020", false, false).unwrap_err().to_string();
        assert!(err.contains("refusing") && err.contains("auth.allow_anonymous"), "{err}");
        assert!(check_exposure("0.0.0.0:8020", true, false).is_ok());
        assert!(check_exposure("0.0.0.0:8020", false, true).is_ok());
    }
}
