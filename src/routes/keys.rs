//! Section 8: API keys managed at run time by an `admin` key. An admin key
//! manages its own project's keys; the secret of a new key is answered once
//! and kept nowhere (only its MAC).

use super::AppState;
use crate::auth::{Caller, Scope, Scopes};
use crate::error::ApiError;
use actix_web::http::StatusCode;
use actix_web::{HttpResponse, web};
use serde::Deserialize;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewKey {
    project_id: Option<serde_json::Value>,
    scopes: Option<Vec<String>>,
    label: Option<String>,
}

const MAX_LABEL: usize = 255;
const MAX_PROJECT: usize = 128;

/// The project a call acts on: the key's own, or for an anonymous caller
/// of an open daemon, the one named (default `default`).
fn project_of(caller: &Caller, named: Option<&str>) -> Result<String, ApiError> {
    match (caller.project(), named) {
        (Some(own), Some(named)) if own != named => Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "wrong-project",
            "an admin key manages the keys of its own project only",
        )),
        (Some(own), _) => Ok(own.to_owned()),
        (None, named) => Ok(named.unwrap_or("default").to_owned()),
    }
}

pub async fn create(
    state: web::Data<AppState>,
    caller: Caller,
    body: web::Json<NewKey>,
) -> Result<HttpResponse, ApiError> {
    let body = body.into_inner();
    let named = match body.project_id {
        None | Some(serde_json::Value::Null) => None,
        Some(serde_json::Value::String(s)) => Some(s),
        Some(serde_json::Value::Number(n)) if n.is_i64() => Some(n.to_string()),
        Some(_) => return Err(ApiError::bad_request("invalid-project", "project_id must be a string or an integer")),
    };
    if let Some(named) = &named
        && (named.is_empty() || named.len() > MAX_PROJECT || named.chars().any(|c| c.is_control() || c == '/'))
    {
        return Err(ApiError::bad_request(
            "invalid-project",
            format!("project_id must be 1 to {MAX_PROJECT} characters, without '/' or control characters"),
        ));
    }
    let project = project_of(&caller, named.as_deref())?;
    let scopes = match body.scopes {
        None => Scopes::all(),
        Some(names) if names.is_empty() => {
            return Err(ApiError::bad_request("invalid-scope", "a key needs at least one scope"));
        }
        Some(names) => {
            let mut scopes = Vec::new();
            for name in &names {
                scopes.push(Scope::parse(name).ok_or_else(|| {
                    ApiError::bad_request(
                        "invalid-scope",
                        format!("unknown scope {name:?}: the scopes are upload, read, delete and admin"),
                    )
                })?);
            }
            Scopes::of(&scopes)
        }
    };
    if let Some(label) = &body.label
        && (label.len() > MAX_LABEL || label.chars().any(char::is_control))
    {
        return Err(ApiError::bad_request(
            "invalid-label",
            format!("label must be at most {MAX_LABEL} bytes without control characters"),
        ));
    }
    let (key, secret) =
        state.auth.mint(&state.repo, &project, scopes, body.label, caller.key_id().map(str::to_owned)).await?;
    Ok(HttpResponse::Created().json(serde_json::json!({
        "id": key.id,
        "secret": secret,
        "token": format!("{}.{}", key.id, secret),
        "project_id": key.project_id,
        "scopes": scopes.names(),
        "label": key.label,
        "created_at": key.created_at.to_rfc3339(),
    })))
}

pub async fn list(state: web::Data<AppState>, caller: Caller) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(serde_json::json!({ "keys": state.auth.list(caller.project()) })))
}

pub async fn revoke(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = path.into_inner();
    if state.auth.revoke(&state.repo, &id, caller.project()).await? {
        Ok(HttpResponse::NoContent().finish())
    } else {
        Err(ApiError::not_found(
            "key-not-found",
            "no key with this id was minted for this project (keys from configuration are changed there)",
        ))
    }
}

/// `GET /api/v1/webhooks` (admin): each endpoint's deliveries, failures and
/// the last ones' outcomes. Endpoints are the operator's and carry every
/// project's events: a project's admin sees the counts, and of the
/// deliveries only those about its own uploads and the videos it holds
/// (section 8).
pub async fn webhooks(state: web::Data<AppState>, caller: crate::auth::Caller) -> Result<HttpResponse, ApiError> {
    let mut reports = state.webhooks.reports().await;
    if let Some(project) = caller.tenant().confined_to() {
        let mut held = std::collections::HashMap::new();
        for report in &mut reports {
            let mut keep = Vec::new();
            for (named, key) in report.recent.iter().map(|d| (d.project.clone(), d.key.clone())) {
                keep.push(its_own(&state, project, named, key, &mut held).await?);
            }
            let mut flags = keep.into_iter();
            report.recent.retain(|_| flags.next().unwrap_or(false));
            let mut keep = Vec::new();
            for (named, key) in report.dead.iter().map(|d| (d.project.clone(), d.key.clone())) {
                keep.push(its_own(&state, project, named, key, &mut held).await?);
            }
            let mut flags = keep.into_iter();
            report.dead.retain(|_| flags.next().unwrap_or(false));
        }
    }
    Ok(HttpResponse::Ok().json(serde_json::json!({ "webhooks": reports })))
}

/// Whether a delivery is `project`'s to see: its event names the project,
/// or names none and is about a video the project holds.
async fn its_own(
    state: &AppState,
    project: &str,
    named: Option<String>,
    key: Option<String>,
    held: &mut std::collections::HashMap<String, bool>,
) -> Result<bool, ApiError> {
    if let Some(named) = named {
        return Ok(named == project);
    }
    let Some(hash) = key.and_then(|k| crate::domain::ContentHash::parse(&k).ok()) else { return Ok(false) };
    if let Some(known) = held.get(&hash.to_hex()) {
        return Ok(*known);
    }
    let holds = state.repo.holds(project, &hash).await?;
    held.insert(hash.to_hex(), holds);
    Ok(holds)
}
