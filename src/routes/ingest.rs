//! `POST /ingest`: the daemon fetches the URL itself.

use super::{AppState, SourceRequest};
use crate::error::ApiError;
use crate::ingest::IngestRequest;
use actix_web::{HttpResponse, web};

#[tracing::instrument(skip_all, fields(url = %body.url))]
pub async fn ingest(
    state: web::Data<AppState>,
    caller: crate::auth::Caller,
    body: web::Json<SourceRequest>,
) -> Result<HttpResponse, ApiError> {
    let source = body.into_inner().parse()?;
    let request = IngestRequest {
        url: source.url,
        bucket: source.bucket,
        prefix: source.prefix,
        meta: source.meta,
        tenant: caller.tenant(),
        public: source.public,
    };
    let result = state.fetcher.ingest(request).await?;
    Ok(HttpResponse::Ok().json(result))
}
