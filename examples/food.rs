//! The service of Kinto-Core's tutorial ("Setting up a service using kinto.core"), on Tidemark's
//! toolkit: a `food` resource on `http://localhost:9999/v0/food`.
//!
//! ```sh
//! cargo run --example food                 # every user has their own food list
//! cargo run --example food -- --shared     # food items can be shared with other users
//! cargo run --example food -- config.ini   # settings from a Kinto-style INI file
//! echo '{"data": {"food": "chocolate", "taste": "varies from bitter to sweet"}}' \
//!     | http post http://localhost:9999/v0/food --auth "token:mkaur"
//! ```
//!
//! Any `user:password` is an identity (Basic Auth, as in the tutorial). Data is kept in memory
//! unless the INI file names another `storage_backend`.

use serde_json::json;
use tidemark_server::toolkit::{Resource, Service};

fn main() -> Result<(), String> {
    tracing_subscriber::fmt().with_env_filter(tracing_subscriber::EnvFilter::new("info")).init();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let shared = args.iter().any(|a| a == "--shared");
    let config = args.iter().find(|a| !a.starts_with("--")).map(std::path::PathBuf::from);

    // Each food must at least say what it is.
    let schema = json!({
        "type": "object",
        "properties": {"food": {"type": "string"}, "taste": {"type": "string"}},
        "required": ["food"]
    });
    let food = if shared { Resource::shareable("food", "food") } else { Resource::per_user("food", "food") };
    let food = food.schema(&schema)?;

    let mut service = Service::new("food")
        .version("1.0.0")
        .prefix("/v0")
        .default_setting("bind", "127.0.0.1:9999")
        .default_setting("storage_backend", "memory")
        .default_setting("multiauth.policies", "basicauth")
        // Shared food items live at the root: any authenticated user may create one.
        .default_setting("food_create_principals", "system.Authenticated")
        .from_environment()
        .resource(food);
    if let Some(config) = config {
        service = service.ini(config);
    }
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().map_err(|e| e.to_string())?;
    runtime.block_on(service.serve())
}
