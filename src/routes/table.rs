//! The route table: every endpoint the daemon serves, with the rule for who
//! may call it. Routes are registered from this table and nowhere else, so
//! an endpoint cannot exist without a rule; the guard (`access`) looks the
//! rule up by the matched pattern, and refuses a matched pattern the table
//! does not list (a route registered around the table) with 403.
//!
//! Order matters as it does in actix: a path is tried before the ones after
//! it, so `/videos/upload/{upload_id}` comes before `/videos/{video_id}`.
//! Entries of one path are adjacent and become one resource.

use super::{
    cache, chunked, events, frames, ingest, keys, media, multipart, ops, pages, playback, signed_uploads, tus, upload,
};
use crate::auth::{Rule, Scope};
use actix_web::http::Method;
use actix_web::web;

pub struct Endpoint {
    pub method: Method,
    /// The actix pattern, as `HttpRequest::match_pattern` answers it.
    pub path: &'static str,
    pub rule: Rule,
    route: fn() -> actix_web::Route,
}

macro_rules! endpoint {
    ($method:ident $path:literal, $rule:expr, $handler:path) => {
        Endpoint {
            method: Method::$method,
            path: $path,
            rule: $rule,
            route: || web::method(Method::$method).to($handler),
        }
    };
}

const UPLOAD: Rule = Rule::Scope(Scope::Upload);
const READ: Rule = Rule::Scope(Scope::Read);
const DELETE: Rule = Rule::Scope(Scope::Delete);
const ADMIN: Rule = Rule::Scope(Scope::Admin);
const PROJECT_UPLOAD: Rule = Rule::ProjectScope(Scope::Upload);
const PUBLIC: Rule = Rule::Public;
/// A chunked or tus upload's own routes: a key, or its signed upload URL.
const DOOR: Rule = Rule::Door;

pub static ENDPOINTS: &[Endpoint] = &[
    // Section 5's media first: a segment is what the daemon serves most,
    // and actix tries patterns in this order, each with a regular
    // expression, twice a request (the guard's `match_pattern`, then the
    // routing). No other pattern starts with `/media/`. Signed playback
    // (the token in the path is the credential) comes before
    // `/media/{hash}/{tail}`, which would take `t` for a hash.
    endpoint!(GET "/media/t/{token}/{hash}/thumbnail.jpg", Rule::Playback, frames::signed_thumbnail),
    endpoint!(GET "/media/t/{token}/{hash}/{tail:.*}", Rule::Playback, media::signed_file),
    endpoint!(HEAD "/media/t/{token}/{hash}/{tail:.*}", Rule::Playback, media::signed_file),
    endpoint!(GET "/media/{hash}/thumbnail.jpg", Rule::Media, frames::thumbnail),
    endpoint!(GET "/media/{hash}/{tail:.*}", Rule::Media, media::file),
    endpoint!(HEAD "/media/{hash}/{tail:.*}", Rule::Media, media::file),
    // Section 1: the content-addressed cache.
    endpoint!(POST "/upload/init", UPLOAD, upload::init),
    // PUT too: `curl -T file` sends PUT (the README's first command).
    endpoint!(POST "/upload/{upload_id}", UPLOAD, upload::body),
    endpoint!(PUT "/upload/{upload_id}", UPLOAD, upload::body),
    endpoint!(GET "/upload/{upload_id}", UPLOAD, upload::status),
    endpoint!(POST "/ingest", UPLOAD, ingest::ingest),
    // Section 2: chunked uploads.
    endpoint!(POST "/videos/init", Rule::DoorCreate, chunked::init),
    endpoint!(POST "/videos/upload_chunk/{upload_id}/{chunk_index}", DOOR, chunked::upload_chunk),
    endpoint!(GET "/videos/upload/{upload_id}", DOOR, chunked::status),
    endpoint!(DELETE "/videos/upload/{upload_id}", DOOR, chunked::abort),
    endpoint!(POST "/videos/finalize/{upload_id}", DOOR, chunked::finalize),
    endpoint!(GET "/videos", READ, chunked::list),
    endpoint!(GET "/videos/{video_id}", READ, chunked::one),
    // Section 3: multipart with presigned parts.
    endpoint!(POST "/api/v1/project/{project_id}/direct_upload/s3/multipart", PROJECT_UPLOAD, multipart::create),
    endpoint!(
        POST "/api/v1/project/{project_id}/direct_upload/s3/multipart/{upload_id}/complete",
        PROJECT_UPLOAD,
        multipart::complete
    ),
    endpoint!(
        GET "/api/v1/project/{project_id}/direct_upload/s3/multipart/{upload_id}/{part_number}",
        PROJECT_UPLOAD,
        multipart::sign_part
    ),
    endpoint!(
        PUT "/api/v1/project/{project_id}/direct_upload/s3/multipart/{upload_id}/{part_number}",
        Rule::Presigned,
        multipart::put_part
    ),
    endpoint!(
        GET "/api/v1/project/{project_id}/direct_upload/s3/multipart/{upload_id}",
        PROJECT_UPLOAD,
        multipart::list_parts
    ),
    endpoint!(
        DELETE "/api/v1/project/{project_id}/direct_upload/s3/multipart/{upload_id}",
        PROJECT_UPLOAD,
        multipart::abort
    ),
    // Section 8: keys.
    endpoint!(POST "/api/v1/keys", ADMIN, keys::create),
    endpoint!(GET "/api/v1/keys", ADMIN, keys::list),
    endpoint!(DELETE "/api/v1/keys/{key_id}", ADMIN, keys::revoke),
    endpoint!(GET "/api/v1/webhooks", ADMIN, keys::webhooks),
    endpoint!(GET "/api/v1/videos/{video_id}/playback", READ, playback::token),
    endpoint!(PUT "/api/v1/videos/{video_id}/playback", UPLOAD, playback::set_policy),
    endpoint!(POST "/api/v1/uploads", UPLOAD, signed_uploads::create),
    // Section 4: tus 1.0. Preflight-style OPTIONS answers the server's
    // capabilities to anyone, as tus clients ask before authenticating.
    endpoint!(POST "/files", Rule::DoorCreate, tus::create),
    endpoint!(OPTIONS "/files", PUBLIC, tus::options),
    endpoint!(POST "/files/", Rule::DoorCreate, tus::create),
    endpoint!(OPTIONS "/files/", PUBLIC, tus::options),
    endpoint!(GET "/files/{upload_id}/result", DOOR, tus::result),
    endpoint!(HEAD "/files/{upload_id}", DOOR, tus::head),
    endpoint!(PATCH "/files/{upload_id}", DOOR, tus::patch),
    endpoint!(DELETE "/files/{upload_id}", DOOR, tus::terminate),
    endpoint!(OPTIONS "/files/{upload_id}", PUBLIC, tus::options),
    // Section 5: media, frames and events.
    endpoint!(GET "/video/{hash}/frame", READ, frames::one),
    endpoint!(POST "/video/{hash}/frames", READ, frames::batch),
    endpoint!(POST "/video/{hash}/transcode", UPLOAD, media::transcode),
    endpoint!(POST "/video/{hash}/unmerge", UPLOAD, cache::unmerge),
    endpoint!(GET "/events", READ, events::stream),
    endpoint!(GET "/resolve", READ, cache::resolve),
    endpoint!(GET "/meta/{hash}", READ, cache::meta),
    endpoint!(GET "/video/{hash}", READ, cache::read),
    endpoint!(HEAD "/video/{hash}", READ, cache::read),
    endpoint!(DELETE "/video/{hash}", DELETE, cache::delete),
    // Section 7: the browser pages (they ask for credentials themselves)
    // and operations. Metrics show counts, not content, but are the
    // operator's: `admin`.
    endpoint!(GET "/", PUBLIC, pages::upload_page),
    endpoint!(HEAD "/", PUBLIC, pages::upload_page),
    endpoint!(GET "/player", PUBLIC, pages::player_page),
    endpoint!(HEAD "/player", PUBLIC, pages::player_page),
    endpoint!(GET "/client/{name:.*}", PUBLIC, pages::asset),
    endpoint!(HEAD "/client/{name:.*}", PUBLIC, pages::asset),
    endpoint!(GET "/healthz", PUBLIC, ops::healthz),
    endpoint!(GET "/readyz", PUBLIC, ops::readyz),
    endpoint!(GET "/metrics", ADMIN, ops::prometheus),
];

/// Registers every endpoint, one resource per path.
pub fn register(cfg: &mut web::ServiceConfig) {
    for group in ENDPOINTS.chunk_by(|a, b| a.path == b.path) {
        let path = group[0].path;
        let resource = group.iter().fold(web::resource(path), |resource, e| resource.route((e.route)()));
        if path.starts_with("/files") {
            // tus: every answer names the protocol version, errors included.
            cfg.service(
                resource.wrap(actix_web::middleware::DefaultHeaders::new().add(("Tus-Resumable", tus::TUS_VERSION))),
            );
        } else {
            cfg.service(resource);
        }
    }
}

/// What the table says about a request that matched `pattern`.
#[derive(Debug, PartialEq, Eq)]
pub enum Lookup {
    Rule(Rule),
    /// The path is served, not with this method: actix answers 405.
    OtherMethod,
    /// A pattern the table does not list: refused.
    Unlisted,
}

pub fn lookup(method: &Method, pattern: &str) -> Lookup {
    let mut listed = false;
    for e in ENDPOINTS.iter().filter(|e| e.path == pattern) {
        if e.method == *method {
            return Lookup::Rule(e.rule);
        }
        listed = true;
    }
    if listed { Lookup::OtherMethod } else { Lookup::Unlisted }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_path_is_one_resource_and_each_method_has_one_rule() {
        let mut seen = std::collections::HashSet::new();
        for group in ENDPOINTS.chunk_by(|a, b| a.path == b.path) {
            assert!(seen.insert(group[0].path), "{} is split over two places in the table", group[0].path);
            let mut methods = std::collections::HashSet::new();
            for e in group {
                assert!(methods.insert(e.method.clone()), "{} {} is listed twice", e.method, e.path);
            }
        }
        assert!(ENDPOINTS.iter().any(|e| e.path.starts_with("/api/v1/project/{project_id}/")));
    }

    #[test]
    fn unlisted_patterns_are_refused_and_other_methods_left_to_actix() {
        assert_eq!(lookup(&Method::DELETE, "/video/{hash}"), Lookup::Rule(DELETE));
        assert_eq!(lookup(&Method::PATCH, "/video/{hash}"), Lookup::OtherMethod);
        assert_eq!(lookup(&Method::GET, "/admin/{anything}"), Lookup::Unlisted);
    }
}
