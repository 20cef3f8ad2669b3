//! The HTTP edge: version prefix and trailing-slash redirects, CORS, body limit, security
//! headers, panics → 500 in Kinto JSON. Everything under the version prefix (`/v1`) goes to
//! [`dispatch`].

use axum::body::Body as AxumBody;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{FromRequestParts, Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Router;
use serde_json::Value;
use tidemark_protocol::{ApiError, Invalid, Location};
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::compression::predicate::{NotForContentType, Predicate, SizeAbove};
use tower_http::compression::CompressionLayer;
use tower_http::request_id::{MakeRequestId, PropagateRequestIdLayer, RequestId, SetRequestIdLayer};
use tower_http::sensitive_headers::SetSensitiveRequestHeadersLayer;
use tower_http::set_header::SetResponseHeaderLayer;
use tower_http::timeout::RequestBodyTimeoutLayer;
use tower_http::trace::TraceLayer;

use crate::dispatch::dispatch;
use crate::error::render;
use crate::error::RETRY_AFTER_SECONDS;
use crate::request::{decode_segments, ApiRequest};
use crate::response::ApiResponse;
use crate::routes;
use crate::state::AppState;
use crate::stream;
use crate::summary::{Caller, Summary};

pub(crate) const CSP: &str = "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; ";
const BASE_EXPOSE: &str = "Backoff,Retry-After,Alert,Content-Length,Content-Type";

/// The whole application; `main` and the tests build the same thing.
///
/// The middleware, as a request meets it (each `.layer` wraps what is below it):
/// 1. `SetRequestId`: the client's `X-Request-Id`, or a fresh one, so logs, events and the
///    answer share it;
/// 2. `SetSensitiveRequestHeaders`: credentials are marked so no log or trace prints them;
/// 3. `Trace`: a span per request carrying that id;
/// 4. `PropagateRequestId`: the id goes back in the response;
/// 5. `Compression`: gzip for clients that accept it, on bodies of 1 KiB or more (not on
///    streams, nor on a HEAD, whose `Content-Length` is that of the body it does not send);
/// 6. `RequestBodyTimeout`: a body that does not arrive in time ends in a 408;
/// 7. `SetResponseHeader`: Kinto's security headers on every answer, errors included;
/// 8. `CatchPanic`: a panic becomes Kinto's 500 JSON, closest to the handler so it still gets
///    the headers above.
///
/// Then [`entry`]: the read timeout, load shedding, CORS, redirects, authentication and the
/// routes. CORS is ours, not tower-http's: Kinto's differs per endpoint (the headers each
/// exposes, 400s in its error format for unknown origins and methods).
pub fn app(state: AppState) -> Router {
    let info_link = state.settings.error_info_link.clone();
    let body_timeout = state.settings.body_read_timeout;
    let gzip = state.settings.compression_enabled;
    let request_id = axum::http::HeaderName::from_static("x-request-id");
    let sensitive: std::sync::Arc<[axum::http::HeaderName]> =
        [header::AUTHORIZATION, header::PROXY_AUTHORIZATION, header::COOKIE, header::SET_COOKIE].into();
    let compressible = SizeAbove::new(1024)
        .and(NotForContentType::GRPC)
        .and(NotForContentType::IMAGES)
        .and(NotForContentType::SSE)
        .and(
            |_: StatusCode, _: axum::http::Version, _: &axum::http::HeaderMap, extensions: &axum::http::Extensions| {
                extensions.get::<Bodiless>().is_none()
            },
        );
    Router::new()
        .fallback(entry)
        .with_state(state)
        .layer(CatchPanicLayer::custom(move |_: Box<dyn std::any::Any + Send>| {
            let response = render(&ApiError::internal(&info_link));
            with_common_headers(response.into_response(), None, &[])
        }))
        .layer(SetResponseHeaderLayer::overriding(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff")))
        .layer(SetResponseHeaderLayer::if_not_present(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP)))
        .layer(RequestBodyTimeoutLayer::new(body_timeout))
        .layer(CompressionLayer::new().gzip(gzip).compress_when(compressible))
        .layer(PropagateRequestIdLayer::new(request_id.clone()))
        .layer(TraceLayer::new_for_http().make_span_with(|request: &Request| {
            let id = request.headers().get("x-request-id").and_then(|v| v.to_str().ok()).unwrap_or_default();
            // A span per request costs at full load: there at `RUST_LOG=debug`.
            tracing::debug_span!("request", id = %id)
        }))
        .layer(SetSensitiveRequestHeadersLayer::from_shared(sensitive))
        .layer(SetRequestIdLayer::new(request_id, MakeId))
}

/// Marks a response whose body is not sent (a HEAD's): never compressed.
#[derive(Clone, Copy)]
struct Bodiless;

/// Request ids: UUID4, as Kinto's (`X-Request-Id` a client sends is kept).
#[derive(Clone, Copy)]
struct MakeId;

impl MakeRequestId for MakeId {
    fn make_request_id<B>(&mut self, _: &axum::http::Request<B>) -> Option<RequestId> {
        HeaderValue::from_str(&tidemark_protocol::ids::uuid4(rand::random())).ok().map(RequestId::new)
    }
}

async fn entry(State(state): State<AppState>, request: Request) -> Response {
    // The summary and the metrics cost a few allocations per request: only when wanted.
    let summary = crate::summary::wanted().then(|| Summary::of(&request));
    let measured = state
        .metrics
        .is_some()
        .then(|| (std::time::Instant::now(), request.method().clone(), request.uri().path().to_owned()));
    let response = match summary {
        Some(summary) => summary.run(answer(&state, request)).await,
        None => answer(&state, request).await,
    };
    if let (Some(metrics), Some((started, method, path))) = (&state.metrics, measured) {
        let status = response.status().as_u16();
        metrics.observe(&endpoint_label(&state, &path), method.as_str(), status, started.elapsed());
    }
    response
}

/// Kinto's route name for a path (`record-object`, `collection-plural`, `batch`…).
fn endpoint_label(state: &AppState, path: &str) -> String {
    let Some(rest) = path.strip_prefix(&*state.prefix) else { return "unknown".into() };
    let Some(segments) = decode_segments(rest) else { return "unknown".into() };
    match routes::parse(&segments, state.endpoints(), &state.registry) {
        Ok(routes::Route::List(addr)) => format!("{}-plural", addr.kind.name),
        Ok(routes::Route::Object(addr)) => format!("{}-object", addr.kind.name),
        Ok(route) => match route {
            routes::Route::Hello => "hello",
            routes::Route::Heartbeat => "heartbeat",
            routes::Route::LbHeartbeat => "lbheartbeat",
            routes::Route::Version => "version",
            routes::Route::Contribute => "contribute",
            routes::Route::Batch => "batch",
            routes::Route::Flush => "flush",
            routes::Route::Permissions => "permissions",
            routes::Route::Metrics => "metrics",
            routes::Route::Api => "api",
            routes::Route::History(_) => "history",
            routes::Route::Snapshot { .. } => "snapshot",
            routes::Route::OpenId { .. } => "openid",
            routes::Route::List(_) | routes::Route::Object(_) => "resource",
        }
        .to_owned(),
        Err(_) if segments == ["ws"] => "websocket".into(),
        Err(_) => "unknown".into(),
    }
}

async fn answer(state: &AppState, request: Request) -> Response {
    let state = state.clone();
    let origin = request.headers().get(header::ORIGIN).and_then(|v| v.to_str().ok()).map(str::to_owned);
    let cors = state.settings.cors_origins.clone();
    let eos = end_of_service(&state);
    let response = match eos {
        Some((true, _)) => {
            let err = ApiError::new(
                410,
                tidemark_protocol::Errno::ServiceDeprecated,
                Some("The service you are trying to connect no longer exists at this location.".into()),
            );
            kinto_error(&err)
        }
        _ => {
            // Reads only: a write, once submitted, commits whatever the client is told.
            let read = matches!(*request.method(), Method::GET | Method::HEAD | Method::OPTIONS);
            let routed = route_request(&state, request, origin.as_deref(), &cors);
            let outcome = match state.settings.request_timeout.filter(|_| read) {
                Some(limit) => tokio::time::timeout(limit, routed).await.unwrap_or_else(|_| {
                    tracing::warn!(timeout_seconds = limit.as_secs(), "read not answered in time");
                    let mut err = ApiError::backend_unavailable(state.settings.retry_after_seconds);
                    err.message = Some("The request took too long, please retry later.".into());
                    Err(kinto_error(&err))
                }),
                None => routed.await,
            };
            match outcome {
                Ok(response) | Err(response) => response,
            }
        }
    };
    let mut response = with_common_headers(response, origin.as_deref().filter(|o| origin_allowed(&cors, o)), &cors);
    // `backoff_percentage`: only that share of responses asks clients to back off (Kinto).
    let backing_off =
        state.settings.backoff_percentage.is_none_or(|share| rand::random::<u32>() % 100 < u32::from(share));
    if let Some(backoff) = state.settings.backoff.filter(|_| backing_off) {
        if let Ok(value) = HeaderValue::from_str(&backoff.to_string()) {
            response.headers_mut().insert("Backoff", value);
        }
    }
    if let Some((_, alert)) = eos {
        if let Ok(value) = HeaderValue::from_str(&alert) {
            response.headers_mut().insert("Alert", value);
        }
    }
    response
}

/// With `eos` set: (is the service over, the `Alert` header). Over on the day itself (Kinto).
fn end_of_service(state: &AppState) -> Option<(bool, String)> {
    let eos = state.settings.eos.as_deref()?;
    let over = today().as_str() >= eos.get(..10).unwrap_or(eos);
    let url = state.settings.eos_url.clone().unwrap_or_else(|| state.settings.project_docs.clone());
    let alert = serde_json::json!({
        "code": if over { "hard-eol" } else { "soft-eol" },
        "message": state.settings.eos_message,
        "url": url,
    });
    Some((over, alert.to_string()))
}

/// Today's UTC date as `YYYY-MM-DD`.
fn today() -> String {
    tidemark_protocol::dates::civil_date((crate::state::now_ms() / 86_400_000) as i64)
}

fn kinto_error(err: &ApiError) -> Response {
    render(err).into_response()
}

/// A 307 as Pyramid sends it: an absolute `Location`, and a short HTML page naming the path
/// (some HTTP clients treat a 3xx with no body and no type as an error). A `ttl` ≥ 0 adds
/// `Cache-Control` and `Expires`.
fn redirect(root: &str, target: &str, ttl: i64) -> Response {
    let body = format!(
        "<html>\n <head>\n  <title>307 Temporary Redirect</title>\n </head>\n <body>\n  \
         <h1>307 Temporary Redirect</h1>\n  The resource has been moved to {}; you should be redirected \
         automatically.\n\n\n </body>\n</html>",
        html_escape(target)
    );
    let mut response = (StatusCode::TEMPORARY_REDIRECT, body).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=UTF-8"));
    if let Ok(value) = HeaderValue::from_str(&format!("{root}{target}")) {
        headers.insert(header::LOCATION, value);
    }
    if ttl >= 0 {
        for (name, value) in crate::toolkit::common::expiry_headers(ttl) {
            if let Ok(value) = HeaderValue::from_str(&value) {
                headers.insert(name, value);
            }
        }
    }
    response
}

/// Python's `html.escape(text, quote=True)`.
fn html_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#x27;"),
            c => out.push(c),
        }
    }
    out
}

/// `scheme://host/v1` (the service's prefix) for links in responses (`url`, `Next-Page`,
/// redirects).
fn base_url(state: &AppState, request: &Request) -> String {
    let scheme = state.settings.http_scheme.clone().unwrap_or_else(|| "http".into());
    let host = state
        .settings
        .http_host
        .clone()
        .or_else(|| request.headers().get(header::HOST).and_then(|h| h.to_str().ok()).map(str::to_owned))
        .unwrap_or_else(|| state.settings.bind.clone());
    format!("{scheme}://{host}{}", state.prefix)
}

async fn route_request(
    state: &AppState,
    request: Request,
    origin: Option<&str>,
    cors: &[String],
) -> Result<Response, Response> {
    // Read the body before any answer, redirects included: a response sent over an unread body
    // makes the server drop the keep-alive connection under the client's next request.
    let (parts, body) = request.into_parts();
    let limit = state.settings.max_body_bytes;
    // A body declared too large is refused before a byte of it is waited for.
    let declared = parts.headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|length| length > limit as u64) {
        return Err(kinto_error(&ApiError::too_large(limit)));
    }
    let body = match axum::body::to_bytes(body, limit).await {
        Ok(bytes) => bytes,
        Err(err) => return Err(kinto_error(&body_error(&err, limit))),
    };
    let request = Request::from_parts(parts, AxumBody::empty());
    let path = request.uri().path().to_owned();
    let query = request.uri().query().map(str::to_owned);
    let with_query = |p: &str| match &query {
        Some(q) => format!("{p}?{q}"),
        None => p.to_owned(),
    };
    let base = base_url(state, &request);
    let prefix: &str = &state.prefix;
    let root = base.strip_suffix(prefix).unwrap_or(&base).to_owned();

    if path == prefix {
        return Err(redirect(
            &root,
            &with_query(&format!("{prefix}/")),
            state.settings.trailing_slash_redirect_ttl_seconds,
        ));
    }
    let Some(rest) = path.strip_prefix(prefix).and_then(|r| r.strip_prefix('/')).map(|r| format!("/{r}")) else {
        let versioned = path.strip_prefix("/v").is_some_and(|r| {
            r.split('/').next().is_some_and(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
        });
        if versioned {
            return Err(kinto_error(&ApiError::version_not_available()));
        }
        if request.method() == Method::OPTIONS {
            return Ok(StatusCode::OK.into_response());
        }
        if !state.settings.version_prefix_redirect_enabled {
            return Err(kinto_error(&ApiError::unknown_url()));
        }
        return Err(redirect(
            &root,
            &format!("{prefix}{}", with_query(&path)),
            state.settings.version_prefix_redirect_ttl_seconds,
        ));
    };
    // The admin app is files, not API: `/admin/` keeps its slash (Kinto redirects to it).
    if let Some(admin) = &state.admin {
        if rest == "/admin" {
            return Err(redirect(&root, &with_query(&format!("{prefix}/admin/")), -1));
        }
        if let Some(file) = rest.strip_prefix("/admin/") {
            if matches!(*request.method(), Method::GET | Method::HEAD) {
                return Ok(admin.serve(file));
            }
        }
    }
    if rest.len() > 1 && rest.ends_with('/') {
        if !state.settings.trailing_slash_redirect_enabled {
            return Err(kinto_error(&ApiError::unknown_url()));
        }
        let stripped = format!("{prefix}{}", rest.trim_end_matches('/'));
        return Err(redirect(&root, &with_query(&stripped), state.settings.trailing_slash_redirect_ttl_seconds));
    }
    let Some(segments) = decode_segments(&rest) else {
        let mut err = ApiError::invalid_one(Location::Path, None, "Invalid URL path.");
        err.message = Some("Invalid URL path.".into());
        return Err(kinto_error(&err));
    };
    if let Some(origin) = origin {
        if !origin_allowed(cors, origin) {
            return Err(kinto_error(&ApiError::invalid_one(
                Location::Header,
                Some("Origin"),
                format!("{origin} not allowed"),
            )));
        }
    }
    if request.method() == Method::OPTIONS {
        return preflight(state, &request, &segments, origin);
    }
    // Several servers on one database: what any of them committed before this request is seen
    // by it (one round trip shared by the requests waiting; nothing on a store of our own).
    // The heartbeats report on the storage themselves.
    if !matches!(segments.first().map(String::as_str), Some("__heartbeat__" | "__lbheartbeat__")) {
        state.engine.sync_reads().await.map_err(|err| kinto_error(&crate::error::from_engine(err)))?;
    }
    let (mut parts, _) = request.into_parts();
    let peer = parts.extensions.get::<axum::extract::ConnectInfo<std::net::SocketAddr>>().map(|c| c.0.ip());
    if segments == ["ws"] && parts.method == Method::GET {
        let identity = state.identify_request(&parts.headers, peer).await.map_err(|e| kinto_error(&e))?;
        return match WebSocketUpgrade::from_request_parts(&mut parts, &()).await {
            Ok(upgrade) => {
                let state = state.clone();
                // Small buffers: an idle subscribed socket must stay cheap (tens of KiB).
                let upgrade = upgrade.read_buffer_size(4096).write_buffer_size(16 * 1024).max_message_size(64 * 1024);
                Ok(upgrade
                    .on_upgrade(move |socket| async move { stream::spawn(stream::ws::run(socket, state, identity)) })
                    .into_response())
            }
            Err(rejection) => Ok(rejection.into_response()),
        };
    }
    if let (Some((bucket, collection)), &Method::GET) = (stream::sse::parse_path(&segments), &parts.method) {
        let identity = state.identify_request(&parts.headers, peer).await.map_err(|e| kinto_error(&e))?;
        let last_event_id = parts.headers.get("last-event-id").and_then(|v| v.to_str().ok());
        let query = query.clone().unwrap_or_default();
        return Ok(stream::sse::serve(state.clone(), identity, bucket, collection, &query, last_event_id).await);
    }

    // Streams are long-lived and throttled by their own queues: only requests are counted.
    let _permit = state.limits.admit().map_err(|()| {
        let mut err = ApiError::backend_unavailable(RETRY_AFTER_SECONDS);
        err.message = Some("The server is overloaded, please retry later.".into());
        kinto_error(&err)
    })?;
    let identity = state.identify_request(&parts.headers, peer).await.map_err(|e| kinto_error(&e))?;
    let principal = match (&identity.user_id, peer) {
        (Some(user), _) => user.clone(),
        (None, Some(ip)) => format!("ip:{ip}"),
        (None, None) => "anonymous".to_owned(),
    };
    if let Err(wait) = state.limits.take(&principal) {
        return Err(kinto_error(&crate::limits::too_many_requests(wait, "Too many requests, slow down.")));
    }
    let api_request = ApiRequest {
        method: parts.method,
        path: rest,
        segments,
        query: query.unwrap_or_default(),
        headers: parts.headers,
        body,
        base_url: base,
        identity,
        client: peer,
    };
    let is_head = api_request.method == Method::HEAD;
    let caller = crate::summary::wanted().then(|| Caller(api_request.identity.user_id.clone()));
    let response = dispatch(state, api_request).await;
    let mut response = response.into_response();
    if let Some(caller) = caller {
        response.extensions_mut().insert(caller);
    }
    if response.status() == StatusCode::UNAUTHORIZED && response.headers().contains_key(header::WWW_AUTHENTICATE) {
        // One challenge per policy that has one (Basic, Bearer…), as Kinto's multiauth sends them.
        let headers = response.headers_mut();
        headers.remove(header::WWW_AUTHENTICATE);
        for challenge in state.authenticator.challenges() {
            if let Ok(value) = HeaderValue::from_str(&challenge) {
                headers.append(header::WWW_AUTHENTICATE, value);
            }
        }
    }
    if is_head {
        // A HEAD announces the length of the body a GET would send (Kinto's, for a list, is that
        // of an empty page) and sends none.
        let length = axum::body::HttpBody::size_hint(response.body()).exact().unwrap_or(0);
        response.headers_mut().insert(header::CONTENT_LENGTH, HeaderValue::from(length));
        response.extensions_mut().insert(Bodiless);
        *response.body_mut() = AxumBody::empty();
    }
    Ok(response)
}

/// Why a body could not be read: too large (413), too slow (408), or cut off (400).
fn body_error(err: &axum::Error, limit: usize) -> ApiError {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(error) = cause {
        if error.is::<http_body_util::LengthLimitError>() {
            return ApiError::too_large(limit);
        }
        if error.is::<tower_http::timeout::TimeoutError>() {
            let message = "The request body was not received in time.";
            return ApiError::new(408, tidemark_protocol::Errno::Undefined, Some(message.into()));
        }
        cause = error.source();
    }
    ApiError::invalid_one(Location::Body, None, "The request body could not be read.")
}

/// CORS preflight (`OPTIONS` with `Origin` and `Access-Control-Request-Method`).
fn preflight(
    state: &AppState,
    request: &Request,
    segments: &[String],
    origin: Option<&str>,
) -> Result<Response, Response> {
    let requested = request.headers().get("access-control-request-method").and_then(|v| v.to_str().ok());
    let mut missing = Vec::new();
    if origin.is_none() {
        missing.push(Invalid::new(Location::Header, Some("Origin"), "this header is mandatory"));
    }
    if requested.is_none() {
        missing.push(Invalid::new(Location::Header, Some("Access-Control-Request-Method"), "this header is mandatory"));
    }
    if !missing.is_empty() {
        return Err(kinto_error(&ApiError::invalid(missing)));
    }
    let route = routes::parse(segments, state.endpoints(), &state.registry).map_err(|e| kinto_error(&e))?;
    let method = requested.unwrap_or_default().to_ascii_uppercase();
    if !route.allows(&method) {
        return Err(kinto_error(&ApiError::invalid_one(
            Location::Header,
            Some("Access-Control-Request-Method"),
            "Method not allowed",
        )));
    }
    let mut response = ApiResponse::json(StatusCode::OK, Value::Null);
    response.set_header("Access-Control-Allow-Methods", route.allowed().replace(", ", ","));
    // As Kinto: what the endpoint's methods expose, and whatever the browser asks for.
    let mut allowed_headers: Vec<String> = Vec::new();
    for method in route.allowed().split(", ").filter_map(|m| Method::from_bytes(m.as_bytes()).ok()) {
        for header in crate::dispatch::exposed(&route, &method) {
            if !allowed_headers.iter().any(|h| h == header) {
                allowed_headers.push(header.to_owned());
            }
        }
    }
    if let Some(asked) = request.headers().get("access-control-request-headers").and_then(|v| v.to_str().ok()) {
        allowed_headers.extend(asked.split(',').map(|h| h.trim().to_owned()).filter(|h| !h.is_empty()));
    }
    response.set_header("Access-Control-Allow-Headers", allowed_headers.join(","));
    if let Some(max_age) = state.settings.cors_max_age_seconds {
        response.set_header("Access-Control-Max-Age", max_age.to_string());
    }
    Ok(response.into_response())
}

/// Shell-style patterns (`*` only) from `cors_origins`.
pub(crate) fn origin_allowed(cors: &[String], origin: &str) -> bool {
    cors.iter().any(|pattern| wildcard_match(pattern, origin))
}

pub(crate) fn wildcard_match(pattern: &str, text: &str) -> bool {
    match pattern.split_once('*') {
        None => pattern == text,
        Some((head, tail)) => {
            text.starts_with(head) && {
                let rest = &text[head.len()..];
                (0..=rest.len()).any(|i| rest.is_char_boundary(i) && wildcard_match(tail, &rest[i..]))
            }
        }
    }
}

/// CORS headers on every response: the base expose list and the allowed origin.
fn with_common_headers(mut response: Response, allowed_origin: Option<&str>, cors: &[String]) -> Response {
    let status = response.status();
    let headers = response.headers_mut();
    // Kinto exposes nothing on preflights and method-not-allowed answers; elsewhere at least the
    // base list (its unknown-URL 404s write it without spaces).
    let preflight = headers.contains_key("Access-Control-Allow-Methods");
    if !headers.contains_key("Access-Control-Expose-Headers") && !preflight && status != StatusCode::METHOD_NOT_ALLOWED
    {
        headers.insert("Access-Control-Expose-Headers", HeaderValue::from_static(BASE_EXPOSE));
    }
    if let Some(origin) = allowed_origin {
        let value = if cors.iter().any(|c| c == "*") { "*" } else { origin };
        if let Ok(value) = HeaderValue::from_str(value) {
            headers.insert("Access-Control-Allow-Origin", value);
        }
    }
    response
}
