//! The OpenAPI document, served at `/openapi.json`.

use crate::{handlers, model};
use utoipa::OpenApi;

/// The API as OpenAPI 3.1.
#[derive(Debug, OpenApi)]
#[openapi(
    info(title = "Arbor API", description = "E2B / Novita-compatible sandbox API. Every route needs `X-API-KEY`; \
        a key sees only its team's objects, and `/admin/*` needs an admin key."),
    paths(
        handlers::sandboxes::create,
        handlers::sandboxes::get,
        handlers::sandboxes::kill,
        handlers::sandboxes::set_timeout,
        handlers::sandboxes::connect,
        handlers::list::list_v2,
        handlers::list::list_v1,
        handlers::metrics::metrics,
        handlers::metrics::quota,
        handlers::network::set_network,
        handlers::persist::pause,
        handlers::persist::create_snapshot,
        handlers::persist::list_snapshots,
        handlers::templates::delete,
        handlers::persist::clone,
        handlers::persist::fork,
        handlers::sandboxes::resume,
        handlers::teams::mine,
        handlers::teams::list,
        handlers::teams::create,
        handlers::teams::keys,
        handlers::teams::create_key,
        handlers::teams::revoke_key,
    ),
    components(schemas(
        model::NewSandbox, model::Sandbox, model::SandboxDetail, model::SandboxMetric, model::Quota,
        model::ErrorBody, model::ConnectSandbox, model::SetTimeout, model::NetworkConfig,
        model::CloneRequest, model::CloneResponse, model::ClonedSandbox, model::NewSnapshot, model::SnapshotInfo,
        model::ForkRequest, model::ForkResult, handlers::teams::Team, handlers::teams::AdminTeam,
        handlers::teams::NewTeam, handlers::teams::NewTeamKey, handlers::teams::TeamKey, handlers::teams::CreatedTeamKey
    )),
    modifiers(&ApiKey)
)]
pub struct ApiDoc;

struct ApiKey;

impl utoipa::Modify for ApiKey {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{ApiKey as Key, ApiKeyValue, SecurityRequirement, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme("ApiKey", SecurityScheme::ApiKey(Key::Header(ApiKeyValue::new("X-API-KEY"))));
        openapi.security = Some(vec![SecurityRequirement::new("ApiKey", Vec::<String>::new())]);
    }
}

/// The document as JSON.
pub fn document() -> String {
    ApiDoc::openapi().to_pretty_json().unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
}
