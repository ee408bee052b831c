//! The guard every request passes before its handler: it finds the route's
//! rule in the table, admits the caller under it (or answers 401/403 with
//! the JSON error body), and writes the audit log: one structured line and
//! one counter per mutating call and per refusal.

use super::AppState;
use super::table::{Lookup, lookup};
use crate::auth::{Caller, Rule};
use crate::error::ApiError;
use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::{Method, StatusCode};
use actix_web::middleware::Next;
use actix_web::{HttpMessage, ResponseError, web};

/// The playback token a media request came with (a request extension):
/// its replies may be cached no longer than it lives.
pub use crate::auth::PlaybackGrant;

/// The audit log's target: `RUST_LOG=vidcache::audit=info` shows only it.
const AUDIT: &str = "vidcache::audit";

pub async fn guard<B: MessageBody>(
    req: ServiceRequest,
    srv: Next<B>,
) -> Result<ServiceResponse<EitherBody<B>>, actix_web::Error> {
    let Some(pattern) = req.match_pattern() else {
        // Nothing is served here: the default service answers 404.
        return srv.call(req).await.map(ServiceResponse::map_into_left_body);
    };
    let method = req.method().clone();
    // The audit log names the route's path, with a token in it masked.
    let path = loggable_path(&pattern, req.path());
    let state = req.app_data::<web::Data<AppState>>().cloned();
    let metrics = state.as_ref().map(|s| &s.metrics);
    let rule = match lookup(&method, &pattern) {
        Lookup::OtherMethod => return srv.call(req).await.map(ServiceResponse::map_into_left_body),
        Lookup::Unlisted => Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "no-access-rule",
            "this route has no access rule, so nobody may call it",
        )),
        Lookup::Rule(rule) => Ok(rule),
    };
    let decision = match (rule, &state) {
        (Err(refusal), _) => Err(refusal),
        (Ok(_), None) => Err(ApiError::internal("the application state is missing")),
        (Ok(Rule::Playback), Some(state)) => admit_playback(state, &pattern, &req).await.map(|grant| {
            req.extensions_mut().insert(grant);
            Caller::Public
        }),
        (Ok(rule @ (Rule::Door | Rule::DoorCreate)), Some(state)) if let Some(token) = upload_token(&req) => {
            admit_upload_token(state, rule, &pattern, &req, token)
        }
        (Ok(rule), Some(state)) => {
            let project = path_param(&pattern, req.path(), "project_id");
            state.auth.admit(rule, req.request(), project.as_deref())
        }
    };
    let caller = match decision {
        Ok(caller) => caller,
        Err(refusal) => {
            audit(metrics, &method, &pattern, &path, &Caller::Anonymous, refusal.status, "refused");
            let response = refusal.error_response();
            return Ok(req.into_response(response).map_into_right_body());
        }
    };
    req.extensions_mut().insert(caller.clone());
    let response = srv.call(req).await?;
    let mutating = matches!(method, Method::POST | Method::PUT | Method::PATCH | Method::DELETE);
    let status = response.status();
    if mutating || matches!(status, StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN) {
        let result = match status {
            s if s.is_success() || s.is_redirection() => "ok",
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => "refused",
            _ => "failed",
        };
        audit(metrics, &method, &pattern, &path, &caller, status, result);
    }
    Ok(response.map_into_left_body())
}

/// A signed upload URL's token: the `upload_token` query parameter (what
/// tus clients keep in the upload's URL) or the `Upload-Token` header.
pub fn upload_token(req: &ServiceRequest) -> Option<String> {
    if let Some(value) = req.headers().get("upload-token").and_then(|v| v.to_str().ok()) {
        return Some(value.to_owned());
    }
    web::Query::<std::collections::HashMap<String, String>>::from_query(req.query_string())
        .ok()
        .and_then(|q| q.get("upload_token").cloned())
}

/// The token a request came with, for handlers that hand it on (the tus
/// `Location` of an upload created with one).
#[derive(Debug, Clone)]
pub struct UploadTokenUsed(pub String);

/// A playback token in the path, checked against the projects that hold
/// the path's video now.
async fn admit_playback(state: &AppState, pattern: &str, req: &ServiceRequest) -> Result<PlaybackGrant, ApiError> {
    let token = path_param(pattern, req.path(), "token").unwrap_or_default();
    let hash = path_param(pattern, req.path(), "hash").unwrap_or_default();
    let holders = match crate::domain::ContentHash::parse(&hash) {
        Ok(parsed) => state.repo.holders(&parsed).await?,
        Err(_) => Vec::new(),
    };
    let holders: Vec<(String, bool)> = holders.into_iter().map(|h| (h.project, h.pending)).collect();
    Ok(state.auth.check_playback(&token, &hash, &holders)?)
}

/// Admits a signed upload URL's token on a door: creating its upload while
/// unexpired, then that upload only; from its origin only, when it names one.
fn admit_upload_token(
    state: &AppState,
    rule: Rule,
    pattern: &str,
    req: &ServiceRequest,
    token: String,
) -> Result<Caller, ApiError> {
    let grant = state.auth.check_upload_token(&token)?;
    if let (Some(allowed), Some(origin)) =
        (grant.origin.as_deref(), req.headers().get("origin").and_then(|o| o.to_str().ok()))
        && allowed != origin
    {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "origin-not-allowed",
            "this upload URL was made for pages of another origin",
        ));
    }
    match rule {
        Rule::DoorCreate => grant.creatable()?,
        _ => {
            if path_param(pattern, req.path(), "upload_id").as_deref() != Some(grant.upload_id.as_str()) {
                return Err(ApiError::new(
                    StatusCode::FORBIDDEN,
                    "upload-token-mismatch",
                    "this upload URL opens another upload",
                ));
            }
        }
    }
    req.extensions_mut().insert(UploadTokenUsed(token));
    Ok(Caller::Upload(Box::new(grant)))
}

/// The value of `{name}` in `path` matched by `pattern` (routing has not
/// filled `match_info` yet when the guard runs). Placeholders before it
/// are single segments, as they are in every pattern that has one.
fn path_param(pattern: &str, path: &str, name: &str) -> Option<String> {
    let wanted = format!("{{{name}}}");
    let index = pattern.split('/').position(|segment| segment == wanted)?;
    let raw = path.split('/').nth(index)?;
    Some(percent_encoding::percent_decode_str(raw).decode_utf8_lossy().into_owned())
}

/// `path` with a playback token (the `{token}` segment) masked: a log is
/// no place for a credential.
fn loggable_path(pattern: &str, path: &str) -> String {
    match pattern.split('/').position(|segment| segment == "{token}") {
        None => path.to_owned(),
        Some(index) => path
            .split('/')
            .enumerate()
            .map(|(i, segment)| if i == index { "<token>" } else { segment })
            .collect::<Vec<_>>()
            .join("/"),
    }
}

/// One audit entry: who (key and project), what (method and route), on
/// what (the path), and how it ended. Never a secret: only the key id.
fn audit(
    metrics: Option<&crate::telemetry::Metrics>,
    method: &Method,
    route: &str,
    target: &str,
    caller: &Caller,
    status: StatusCode,
    result: &'static str,
) {
    tracing::info!(
        target: AUDIT,
        key_id = caller.key_id().unwrap_or("-"),
        project = caller.project().unwrap_or("-"),
        action = %method,
        route,
        target,
        status = status.as_u16(),
        result,
        "audit"
    );
    if let Some(metrics) = metrics {
        metrics.audit.with_label_values(&[route, method.as_str(), result]).inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::App;
    use actix_web::test as web_test;

    #[test]
    fn a_path_parameter_is_read_by_its_place_in_the_pattern() {
        let pattern = "/api/v1/project/{project_id}/direct_upload/s3/multipart/{upload_id}";
        assert_eq!(
            path_param(pattern, "/api/v1/project/p%201/direct_upload/s3/multipart/x", "project_id").as_deref(),
            Some("p 1")
        );
        assert_eq!(path_param("/videos", "/videos", "project_id"), None);
        assert_eq!(
            loggable_path("/media/t/{token}/{hash}/{tail:.*}", "/media/t/123-abc/ff/hls/master.m3u8"),
            "/media/t/<token>/ff/hls/master.m3u8"
        );
    }

    #[actix_web::test]
    async fn a_route_registered_around_the_table_is_refused() {
        let app = web_test::init_service(
            App::new()
                .wrap(actix_web::middleware::from_fn(guard))
                .route("/outside", web::get().to(|| async { "served" })),
        )
        .await;
        let response = web_test::call_service(&app, web_test::TestRequest::get().uri("/outside").to_request()).await;
        assert_eq!(response.status(), 403);
        let body = web_test::read_body(response).await;
        assert!(String::from_utf8_lossy(&body).contains("no-access-rule"));
    }
}
