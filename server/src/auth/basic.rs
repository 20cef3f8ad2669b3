//! Kinto's `basicauth` policy: any `user:password` pair is an identity, `basicauth:<hmac>`.

use tidemark_engine::Engine;
use tidemark_protocol::ApiError;

use super::{hmac_hex, parse_basic, Identified, Policy, BASIC_CHALLENGE};
use crate::toolkit::BoxFuture;

pub struct BasicPolicy {
    name: String,
    hmac_secret: String,
}

impl BasicPolicy {
    pub fn new(name: &str, hmac_secret: String) -> BasicPolicy {
        BasicPolicy { name: name.to_owned(), hmac_secret }
    }
}

impl Policy for BasicPolicy {
    fn name(&self) -> &str {
        &self.name
    }

    fn identify<'a>(
        &'a self,
        _: &'a Engine,
        authorization: &'a str,
    ) -> BoxFuture<'a, Result<Option<Identified>, ApiError>> {
        let found =
            parse_basic(authorization).filter(|(user, _)| !user.is_empty()).map(|(user, password)| Identified {
                // Kinto's prefix is the policy's name, whatever it is called.
                user_id: format!("{}:{}", self.name, hmac_hex(&self.hmac_secret, &format!("{user}:{password}"))),
                profile: None,
            });
        Box::pin(async move { Ok(found) })
    }

    fn challenge(&self) -> Option<String> {
        Some(BASIC_CHALLENGE.to_owned())
    }

    fn capability(&self) -> Option<(String, serde_json::Value)> {
        Some((
            "basicauth".into(),
            serde_json::json!({
                "description": "Very basic authentication sessions. Not for production use.",
                "url": "http://kinto.readthedocs.io/en/stable/api/1.x/authentication.html",
            }),
        ))
    }
}
