//! `POST /ingest`: the daemon fetches the URL itself.

use super::{AppState, parse_meta};
use crate::domain::{Bucket, Prefix, SourceUrl};
use crate::error::ApiError;
use crate::ingest::IngestRequest;
use actix_web::{HttpResponse, web};
use serde::Deserialize;

#[derive(Deserialize)]
pub struct IngestBody {
    url: String,
    bucket: String,
    prefix: Option<String>,
    meta: Option<serde_json::Value>,
}

#[tracing::instrument(skip_all, fields(url = %body.url))]
pub async fn ingest(state: web::Data<AppState>, body: web::Json<IngestBody>) -> Result<HttpResponse, ApiError> {
    let body = body.into_inner();
    let request = IngestRequest {
        url: SourceUrl::parse(&body.url)?,
        bucket: Bucket::parse(&body.bucket)?,
        prefix: Prefix::parse(body.prefix.as_deref().unwrap_or(""))?,
        meta: parse_meta(body.meta)?,
    };
    let result = state.fetcher.ingest(request).await?;
    Ok(HttpResponse::Ok().json(result))
}
