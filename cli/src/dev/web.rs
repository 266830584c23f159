//! The browser client of examples/web, served by `chatctl dev` at
//! `http://127.0.0.1:PORT/`, pre-filled for the local stack. In token mode it
//! can mint tokens for any user: the server listens on loopback only and the
//! secret belongs to a throwaway local stack. Every path but `/` has a dot,
//! which stage names cannot have, so none can shadow the WebSocket API.

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::extract::{Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::{Deserialize, Serialize};

use crate::aws::Aws;
use crate::stack::Names;

const INDEX_HTML: &str = include_str!("../../../examples/web/index.html");
const APP_JS: &str = include_str!("../../../examples/web/app.js");
const STYLE_CSS: &str = include_str!("../../../examples/web/style.css");

/// How long a token minted by `chatctl dev` (printed, or for the page) lives.
pub const DEV_TOKEN_TTL: Duration = Duration::from_secs(24 * 3600);

/// What the page is pre-filled with (`config.json`).
#[derive(Debug, Clone, Serialize)]
pub struct PageConfig {
    pub url: String,
    /// `token`, `oidc` (paste a token of the identity provider) or `none`.
    pub auth: String,
    pub user: String,
    pub room: String,
    /// Where the page gets a token for a user name; token mode only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_endpoint: Option<String>,
    /// The token claim that names the user; oidc mode only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_claim: Option<String>,
    /// How often a quiet page pings: half the idle timeout, when `dev` runs
    /// with one shorter than API Gateway's (the page's own default fits that).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub keep_alive_ms: Option<u64>,
}

struct Site {
    config: PageConfig,
    /// Where the stack's token secret is read, in token mode: each token is
    /// signed with its current version, a rotated one included.
    secret: Option<(Aws, Names)>,
}

/// `/`, its assets, `/config.json` and, in token mode, `/token.json?user=NAME`.
pub fn router(config: PageConfig, secret: Option<(Aws, Names)>) -> Router {
    let site = Arc::new(Site { config, secret });
    let asset = |content_type: &'static str, body: &'static str| {
        get(move || async move { ([(header::CONTENT_TYPE, content_type)], body) })
    };
    Router::new()
        .route("/", asset("text/html; charset=utf-8", INDEX_HTML))
        .route("/app.js", asset("text/javascript; charset=utf-8", APP_JS))
        .route("/style.css", asset("text/css; charset=utf-8", STYLE_CSS))
        .route("/config.json", get(page_config))
        .route("/token.json", get(token))
        .route_layer(axum::middleware::from_fn(loopback_host_only))
        .with_state(site)
}

/// Serves only requests addressed to this machine by name or address, so a
/// web page elsewhere cannot reach the token endpoint through DNS rebinding
/// (its requests carry its own host name).
async fn loopback_host_only(request: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let host = request.headers().get(header::HOST).and_then(|h| h.to_str().ok());
    if !host.is_some_and(|host| crate::aws::is_local_endpoint(&format!("http://{host}/"))) {
        return (StatusCode::FORBIDDEN, "chatctl dev serves this page on 127.0.0.1 only").into_response();
    }
    next.run(request).await
}

async fn page_config(State(site): State<Arc<Site>>) -> Json<PageConfig> {
    Json(site.config.clone())
}

#[derive(Deserialize)]
struct TokenQuery {
    user: Option<String>,
}

async fn token(State(site): State<Arc<Site>>, Query(query): Query<TokenQuery>) -> Response {
    let error = |status: StatusCode, message: String| (status, Json(serde_json::json!({"error": message})));
    let Some((aws, names)) = &site.secret else {
        let message = "this stack runs with auth = \"none\": connect with ?user=NAME".to_string();
        return error(StatusCode::NOT_FOUND, message).into_response();
    };
    let Some(user) = query.user.filter(|u| !u.is_empty()) else {
        return error(StatusCode::BAD_REQUEST, "give a user: /token.json?user=NAME".into()).into_response();
    };
    match crate::token::mint(aws, names, &user, DEV_TOKEN_TTL).await {
        Ok(minted) => Json(minted).into_response(),
        Err(err) => error(StatusCode::BAD_REQUEST, format!("{err:#}")).into_response(),
    }
}
