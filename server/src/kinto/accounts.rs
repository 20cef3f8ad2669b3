//! kinto.plugins.accounts: the rules that make `/accounts` more than a plain resource —
//! bcrypt-hashed passwords, an account always owned by itself, ids tied to the caller.

use axum::http::{Method, StatusCode};
use serde_json::{Map, Value};
use tidemark_engine::Acl;
use tidemark_protocol::{ApiError, Errno, Location};

use crate::auth::hash_password;
use crate::request::ApiRequest;
use crate::response::ApiResponse;
use crate::state::AppState;
use crate::toolkit::{Address, BoxFuture, Hooks, Write};

/// The URL segment of accounts, at the root.
pub const ACCOUNTS: &str = "accounts";

/// The account rules as toolkit hooks: the password checked and hashed, the ACL owned by the
/// account itself, anonymous listing refused.
pub struct AccountHooks;

impl Hooks for AccountHooks {
    fn before_write<'a>(&'a self, write: Write<'a>) -> BoxFuture<'a, Result<Option<Acl>, ApiError>> {
        Box::pin(async move {
            if write.replaces && !write.data_sent {
                // An account's schema has a required field, so its `data` is required.
                return Err(ApiError::invalid_one(Location::Body, Some("data"), "Required"));
            }
            // A PUT replaces the account: the password is required again. On a PATCH the stored
            // value is already a hash: only a changed one was sent.
            let sent = match write.previous {
                Some(previous) if !write.replaces => write.data.get("password") != previous.get("password"),
                _ => write.data.contains_key("password"),
            };
            prepare(write.state, write.req, write.id, write.data, write.replaces, sent).await?;
            Ok(Some(acl(write.id)))
        })
    }

    fn check_list_read(&self, req: &ApiRequest) -> Result<(), ApiError> {
        check_listing(req)
    }
}

/// Is the caller an accounts administrator (`account_write_principals`)?
fn is_admin(state: &AppState, req: &ApiRequest) -> bool {
    let admins = state.settings.principals("account", "write");
    admins.iter().any(|p| req.identity.principals.contains(p))
}

/// Checks and transforms the data of an account write: the id belongs to the caller (unless
/// admin or anonymous: a sign-up), a password is required on a PUT, and it is stored as a
/// bcrypt hash.
async fn prepare(
    state: &AppState,
    req: &ApiRequest,
    id: &str,
    data: &mut Map<String, Value>,
    password_required: bool,
    password_sent: bool,
) -> Result<(), ApiError> {
    match data.get("password") {
        None if password_required => {
            return Err(ApiError::invalid_one(Location::Body, Some("data.password"), "Required"))
        }
        Some(Value::String(_)) | None => {}
        Some(other) => {
            return Err(ApiError::invalid_one(
                Location::Body,
                Some("data.password"),
                format!("{} is not a string: {{'password': ''}}", tidemark_protocol::pyrepr::pyrepr(other)),
            ))
        }
    }
    // Kinto compares with the caller's own user id as its policy gave it (a basicauth user's is
    // its HMAC), so only an account can write itself.
    let own = req.identity.user_id.as_deref().map(|user| user.split_once(':').map_or(user, |(_, name)| name));
    if own.is_some_and(|own| own != id) && !is_admin(state, req) {
        return Err(ApiError::invalid_one(Location::Body, Some("data.id"), "Username and account ID do not match."));
    }
    // The stored value is already a hash: only a password the client sent gets hashed.
    if let (true, Some(Value::String(password))) = (password_sent, data.get("password")) {
        let hashed =
            hash_password(password.clone()).await.ok_or_else(|| ApiError::internal(&state.settings.error_info_link))?;
        data.insert("password".into(), Value::String(hashed));
    }
    Ok(())
}

/// An account is always, and only, written by itself.
fn acl(id: &str) -> Acl {
    Acl::from([("write".to_owned(), vec![format!("account:{id}")])])
}

/// Anonymous listing gets Kinto's odd 401 (errno 999, no message).
fn check_listing(req: &ApiRequest) -> Result<(), ApiError> {
    if (req.method == Method::GET || req.method == Method::HEAD) && !req.identity.is_authenticated() {
        let mut err = ApiError::new(401, Errno::Undefined, None);
        err.error = "Cannot read accounts.".into();
        return Err(err);
    }
    Ok(())
}

/// `POST /accounts`: the id is mandatory; an existing account is returned to its readers,
/// otherwise the request is a creation (`PUT /accounts/{id}`).
pub fn create<'a>(
    state: &'a AppState,
    req: &'a ApiRequest,
    addr: &'a Address,
) -> BoxFuture<'a, Result<ApiResponse, ApiError>> {
    Box::pin(create_account(state, req, addr))
}

async fn create_account(state: &AppState, req: &ApiRequest, addr: &Address) -> Result<ApiResponse, ApiError> {
    let envelope = crate::toolkit::extract::parse_envelope(req, addr)?;
    let id = match envelope.data.as_ref().and_then(|d| d.get("id")) {
        Some(Value::String(id)) => id.clone(),
        _ => return Err(ApiError::invalid_one(Location::Body, Some("data.id"), "data.id in body: Required")),
    };
    if !addr.kind.is_valid_id(&id) {
        return Err(ApiError::invalid_one(Location::Path, None, "Invalid object id"));
    }
    let mut put = req.clone();
    put.method = Method::PUT;
    put.path = format!("/accounts/{id}");
    put.segments = vec!["accounts".into(), id.clone()];
    let object = Address { id: Some(id.clone()), ..addr.clone() };
    if state.engine.get("", ACCOUNTS, &id).map_err(crate::error::from_engine)?.is_some_and(|a| !a.deleted) {
        put.method = Method::GET;
        let mut response = crate::toolkit::objects::handle(state, &put, &object, &id).await?;
        response.status = StatusCode::OK;
        return Ok(response);
    }
    crate::toolkit::objects::handle(state, &put, &object, &id).await
}
