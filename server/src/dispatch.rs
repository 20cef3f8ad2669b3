//! Routes a request under `/v1` to its handler and renders failures. HTTP requests and batch
//! subrequests both come through here.

use std::future::Future;
use std::pin::Pin;

use axum::http::Method;
use tidemark_protocol::ApiError;

use crate::kinto::{default_bucket, history, permissions};
use crate::request::ApiRequest;
use crate::response::ApiResponse;
use crate::routes::{self, Route};
use crate::settings::Plugin;
use crate::state::AppState;
use crate::toolkit::{lists, objects};
use crate::{batch, error, root};

/// Handles one authenticated request; never fails (errors become Kinto error responses).
pub fn dispatch<'a>(
    state: &'a AppState,
    mut req: ApiRequest,
) -> Pin<Box<dyn Future<Output = ApiResponse> + Send + 'a>> {
    Box::pin(async move {
        if state.plugin(Plugin::DefaultBucket) {
            if let Err(err) = default_bucket::resolve(state, &mut req).await {
                return error::render(&err);
            }
        }
        let route = match routes::parse(&req.segments, state.endpoints(), &state.registry) {
            Ok(route) => route,
            Err(err) => return error::render(&err),
        };
        let mut response = match handle(state, &req, &route).await {
            Ok(response) => response,
            Err(err) => error::render(&err),
        };
        // Kinto's method-not-allowed answers come before its CORS handling: they expose nothing.
        if response.status != axum::http::StatusCode::METHOD_NOT_ALLOWED {
            response.set_header("Access-Control-Expose-Headers", exposed(&route, &req.method).join(", "));
        }
        response
    })
}

async fn handle(state: &AppState, req: &ApiRequest, route: &Route) -> Result<ApiResponse, ApiError> {
    if !route.allows(req.method.as_str()) {
        return Err(ApiError::method_not_allowed(route.allowed()));
    }
    let writes = !matches!(req.method, Method::GET | Method::HEAD | Method::OPTIONS);
    if state.settings.readonly && writes {
        return Err(ApiError::method_not_allowed(""));
    }
    let response = match route {
        Route::Hello => root::hello(state, req),
        Route::Heartbeat => root::heartbeat(state).await,
        Route::LbHeartbeat => root::lbheartbeat(),
        Route::Version => root::version(state)?,
        Route::Contribute => root::contribute(),
        Route::Flush => root::flush(state).await?,
        Route::Batch => batch::handle(state, req).await?,
        Route::Permissions => permissions::list(state, req)?,
        Route::Api => ApiResponse::json(axum::http::StatusCode::OK, crate::openapi::document(state, req)),
        Route::Metrics => {
            let bytes = match &state.metrics {
                Some(metrics) => metrics.render(&state.engine).map_err(crate::error::from_engine)?,
                None => Vec::new(),
            };
            let content_type = "text/plain; version=0.0.4; charset=utf-8";
            ApiResponse {
                status: axum::http::StatusCode::OK,
                headers: Default::default(),
                body: crate::response::Body::Other { bytes, content_type },
            }
        }
        Route::History(bucket) => history::handle(state, req, bucket).await?,
        Route::Snapshot { bucket, at } => history::snapshot(state, req, bucket, at)?,
        Route::OpenId { provider, token } => openid(state, req, provider, *token).await?,
        Route::List(addr) => lists::handle(state, req, &scoped(req, addr)?).await?,
        Route::Object(addr) => {
            let id = addr.id.clone().unwrap_or_default();
            objects::handle(state, req, &scoped(req, addr)?, &id).await?
        }
    };
    Ok(response)
}

/// The OpenID login flow: both steps send the browser on with a 307.
async fn openid(state: &AppState, req: &ApiRequest, provider: &str, token: bool) -> Result<ApiResponse, ApiError> {
    let policy = state.openid.get(provider).ok_or_else(ApiError::unknown_url)?;
    let pairs = tidemark_protocol::query::parse_pairs(&req.query)?;
    let token_url = format!("{}/openid/{provider}/token", req.base_url);
    let location = if token {
        policy.token_redirect(&pairs, &token_url).await?
    } else {
        policy.login_redirect(&pairs, &token_url).await?
    };
    Ok(ApiResponse::empty(axum::http::StatusCode::TEMPORARY_REDIRECT).header("Location", location))
}

/// The address in the caller's application namespace and, for a per-user resource, in their own
/// (anonymous callers have none: 401).
fn scoped(req: &ApiRequest, addr: &crate::toolkit::Address) -> Result<crate::toolkit::Address, ApiError> {
    let addr = addr.clone().in_namespace(&req.identity.namespace);
    if !addr.kind.is_per_user() {
        return Ok(addr);
    }
    match &req.identity.user_id {
        Some(user_id) => Ok(addr.scoped_to(user_id)),
        None => Err(crate::authz::deny(&req.identity)),
    }
}

/// `Access-Control-Expose-Headers` as Kinto sends it per kind of endpoint and method (§9.8), on
/// successes and errors alike.
pub fn exposed(route: &Route, method: &Method) -> Vec<&'static str> {
    let mut headers = vec!["Backoff", "Retry-After", "Alert", "Content-Length", "Content-Type"];
    let listing = matches!(route, Route::List(_) | Route::Permissions | Route::History(_));
    let reading = matches!(*method, Method::GET | Method::HEAD);
    if listing && reading {
        headers.push("Next-Page");
    }
    if reading && (listing || matches!(route, Route::Object(_))) {
        headers.extend(["Last-Modified", "ETag", "Cache-Control", "Expires", "Pragma"]);
    }
    if listing && *method == Method::HEAD {
        headers.extend(["Total-Objects", "Total-Records"]);
    }
    headers
}
