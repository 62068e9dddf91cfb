//! The route table.

use crate::{app::App, auth, handlers, openapi};
use axum::{
    middleware,
    routing::{any, get, post, put},
    Router,
};
use std::sync::Arc;

/// The control-plane router (every route behind the API key), with
/// `/openapi.json` public. Non-API paths fall through to `fallback` (the
/// envd proxy).
pub fn router(app: Arc<App>, fallback: Router) -> Router {
    use handlers::{list, metrics, network, persist, sandboxes, teams, templates, unsupported};
    // The upload URL is its own credential (signed; see templates::file_upload).
    let uploads =
        Router::new().route("/templates/{id}/files/{hash}", put(templates::file_upload)).with_state(Arc::clone(&app));
    let (app_domain, host_app) = (app.cfg.domain.clone(), Arc::clone(&app));
    let api = Router::new()
        .route("/sandboxes", get(list::list_v1).post(sandboxes::create))
        .route("/v2/sandboxes", get(list::list_v2).post(sandboxes::create))
        .route("/sandboxes/quota", get(metrics::quota))
        .route("/sandboxes/{id}", get(sandboxes::get).delete(sandboxes::kill))
        .route("/sandboxes/{id}/timeout", post(sandboxes::set_timeout))
        .route("/sandboxes/{id}/connect", post(sandboxes::connect))
        .route("/v2/sandboxes/{id}/connect", post(sandboxes::connect))
        .route("/sandboxes/{id}/resume", post(sandboxes::resume))
        .route("/sandboxes/{id}/metrics", get(metrics::metrics))
        .route("/sandboxes/{id}/network", put(network::set_network))
        .route("/sandboxes/{id}/pause", post(persist::pause))
        .route("/sandboxes/{id}/snapshots", post(persist::create_snapshot))
        .route("/sandboxes/{id}/clone", post(persist::clone))
        .route("/sandboxes/{id}/fork", post(persist::fork))
        .route("/sandboxes/{id}/{op}", post(unsupported::sandbox_operation).get(unsupported::sandbox_operation))
        .route("/snapshots", get(persist::list_snapshots))
        .route("/templates", get(templates::list).post(unsupported::unknown))
        .route("/v2/templates", get(templates::list))
        .route("/v3/templates", post(templates::request_build))
        .route("/templates/aliases/{alias}", get(templates::alias))
        .route("/templates/{id}", get(templates::info).post(unsupported::unknown).delete(templates::delete))
        .route("/templates/{id}/files/{hash}", get(templates::file_link))
        .route("/templates/{id}/builds/{build}/status", get(templates::status))
        .route("/v2/templates/{id}/builds/{build}", post(templates::start))
        // Tags, build logs by another route, PATCH: not served; a JSON 404 rather than the proxy.
        .route("/templates/{id}/{*rest}", any(unsupported::unknown))
        .route("/teams", get(teams::mine))
        // Admin keys only (403 for others): teams and their keys.
        .route("/admin/teams", get(teams::list).post(teams::create))
        .route("/admin/teams/{teamID}/api-keys", get(teams::keys).post(teams::create_key))
        .route("/admin/teams/{teamID}/api-keys/{apiKeyID}", axum::routing::delete(teams::revoke_key))
        .route("/volumes", get(unsupported::unknown).post(unsupported::unknown))
        .route("/secrets", get(unsupported::unknown).post(unsupported::unknown))
        .route_layer(middleware::from_fn_with_state(Arc::clone(&app), auth::require_key))
        .with_state(app);
    let hosts = (Arc::<str>::from(app_domain.as_str()), crate::proxy::proxy(host_app));
    Router::new()
        .merge(uploads)
        .route("/openapi.json", get(|| async { ([("content-type", "application/json")], openapi::document()) }))
        .merge(api)
        .fallback_service(fallback)
        .layer(middleware::from_fn_with_state(hosts, crate::proxy::by_host))
}
