//! The gRPC and gRPC-Web surface (SPEC 4): ZITADEL's `zitadel.resources.user.v3alpha.
//! ZITADELUsers` service for the contact email and OTP Email calls, plus gRPC server
//! reflection, as routes that join the JSON API's router so both share one port, one
//! listener and the request-id middleware. axum's server speaks HTTP/2 without TLS (h2c),
//! which is what gRPC clients use; gRPC-Web (`application/grpc-web+proto`, any HTTP version)
//! is translated by `tonic_web::GrpcWebLayer` in front of the same services.

mod convert;
pub mod proto;
mod status;
mod users;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tonic::server::NamedService;

use self::proto::zitadel::resources::user::v3alpha::zitadel_users_server::ZitadelUsersServer;
use crate::http::extract::{self, BODY_LIMIT};
use crate::state::AppState;

/// Why the gRPC routes could not be built (a broken embedded descriptor set).
#[derive(Debug, thiserror::Error)]
#[error("cannot build the gRPC reflection service: {0}")]
pub struct SetupError(#[from] tonic_reflection::server::Error);

/// The gRPC routes: `ZITADELUsers` behind the token check, and reflection (v1 and v1alpha,
/// as grpcurl and other tools ask for either) without one; all also as gRPC-Web.
///
/// Each service is routed by its name as tonic's `Routes` would, but without the catch-all
/// fallback `Routes` brings: the JSON API's router owns the fallback (404 in SPEC 3.6 shape),
/// and axum refuses to merge two routers that both have one.
pub fn router(state: AppState) -> Result<Router, SetupError> {
    let users = ZitadelUsersServer::new(users::Users::new(state.clone()))
        // The JSON API's body limit, for the same reason: no call needs more.
        .max_decoding_message_size(BODY_LIMIT);
    // Both reflection versions describe everything served, each other included.
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .include_reflection_service(false)
            .register_encoded_file_descriptor_set(proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(
                tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET,
            )
    };
    let reflection_v1 = reflection().build_v1()?;
    let reflection_v1alpha = reflection().build_v1alpha()?;
    Ok(Router::new()
        .route_service(&service_path(&users), users)
        .route_layer(axum::middleware::from_fn_with_state(state, authenticate))
        .route_service(&service_path(&reflection_v1), reflection_v1)
        .route_service(&service_path(&reflection_v1alpha), reflection_v1alpha)
        .layer(tonic_web::GrpcWebLayer::new()))
}

/// `/<package>.<Service>/{*method}`: every method of a gRPC service.
fn service_path<S: NamedService>(_: &S) -> String {
    format!("/{}/{{*method}}", S::NAME)
}

/// Checks the `authorization` metadata before the message is even decoded (SPEC 2: code 16
/// comes first), with the JSON API's token check, and hands the principal to the RPC.
async fn authenticate(State(state): State<AppState>, mut request: Request, next: Next) -> Response {
    match extract::authenticate(&state, request.headers().get(header::AUTHORIZATION)).await {
        Ok(principal) => {
            request.extensions_mut().insert(principal);
            next.run(request).await
        }
        Err(e) => status::from_error(e)
            .into_http::<axum::body::Body>()
            .into_response(),
    }
}
