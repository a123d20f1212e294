//! The gRPC and gRPC-Web surface (SPEC 4): ZITADEL's `zitadel.resources.user.v3alpha.
//! ZITADELUsers` service for the contact email and OTP Email calls, plus gRPC server
//! reflection and `grpc.health.v1.Health`, as routes that join the JSON API's router so all
//! share one port, one listener, CORS and the request-id middleware. axum's server speaks
//! HTTP/2 without TLS (h2c), which is what gRPC clients use; gRPC-Web (`application/grpc-web`,
//! `+proto` and `application/grpc-web-text`, any HTTP version) is translated by
//! `tonic_web::GrpcWebLayer` in front of the same services. Every service takes gzip
//! requests and answers in gzip to a client that sends `grpc-accept-encoding: gzip`.

mod convert;
pub mod health;
pub mod proto;
mod status;
mod users;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tonic::codec::CompressionEncoding::Gzip;
use tonic::server::NamedService;

use self::proto::zitadel::resources::user::v3alpha::zitadel_users_server::ZitadelUsersServer;
use crate::http::extract::{self, BODY_LIMIT};
use crate::state::AppState;

/// Why the gRPC routes could not be built (a broken embedded descriptor set).
#[derive(Debug, thiserror::Error)]
#[error("cannot build the gRPC reflection service: {0}")]
pub struct SetupError(#[from] tonic_reflection::server::Error);

/// The gRPC routes: `ZITADELUsers` behind the token check; reflection (v1 and v1alpha, as
/// grpcurl and other tools ask for either) and health (answered from `readiness`) without
/// one; all also as gRPC-Web.
///
/// Each service is routed by its name as tonic's `Routes` would, but without the catch-all
/// fallback `Routes` brings: the JSON API's router owns the fallback (404 in SPEC 3.6 shape),
/// and axum refuses to merge two routers that both have one.
pub fn router(state: AppState, readiness: &health::Readiness) -> Result<Router, SetupError> {
    let users = ZitadelUsersServer::new(users::Users::new(state.clone()))
        // The JSON API's body limit, for the same reason: no call needs more. tonic applies
        // it to the decompressed message too.
        .max_decoding_message_size(BODY_LIMIT)
        .accept_compressed(Gzip)
        .send_compressed(Gzip);
    // Both reflection versions describe everything served, each other included.
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .include_reflection_service(false)
            .register_encoded_file_descriptor_set(proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(
                tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET,
            )
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    let reflection_v1 = reflection()
        .build_v1()?
        .accept_compressed(Gzip)
        .send_compressed(Gzip);
    let reflection_v1alpha = reflection()
        .build_v1alpha()?
        .accept_compressed(Gzip)
        .send_compressed(Gzip);
    let health = readiness
        .server()
        .accept_compressed(Gzip)
        .send_compressed(Gzip);
    Ok(Router::new()
        .route_service(&service_path(&users), users)
        // Only the routes above need a token: reflection and health are open.
        .route_layer(axum::middleware::from_fn_with_state(state, authenticate))
        .route_service(&service_path(&reflection_v1), reflection_v1)
        .route_service(&service_path(&reflection_v1alpha), reflection_v1alpha)
        .route_service(&service_path(&health), health)
        .layer(tonic_web::GrpcWebLayer::new())
        .layer(axum::middleware::from_fn(answer_in_request_encoding)))
}

/// gRPC-Web answers in the request's encoding (binary or base64 text) unless `Accept` names
/// a gRPC-Web type (SPEC 4). tonic-web reads the answer's encoding from `Accept` alone, so
/// a `grpc-web-text` request without one (or with `*/*`) would get binary: `Accept` is set
/// here to the encoding the answer must have, in the spelling tonic-web knows.
async fn answer_in_request_encoding(mut request: Request, next: Next) -> Response {
    if let Some(text) = answer_as_text(request.headers()) {
        let accept = if text {
            "application/grpc-web-text"
        } else {
            "application/grpc-web+proto"
        };
        request
            .headers_mut()
            .insert(header::ACCEPT, HeaderValue::from_static(accept));
    }
    next.run(request).await
}

/// For a gRPC-Web request, whether the answer is base64 text: the first gRPC-Web type in
/// `Accept` decides, else the request's own content type. `None` for other requests.
fn answer_as_text(headers: &HeaderMap) -> Option<bool> {
    /// `Some(text?)` for a gRPC-Web media type, parameters and case aside.
    fn grpc_web(media_type: &str) -> Option<bool> {
        let essence = media_type.split(';').next()?.trim().to_ascii_lowercase();
        match essence.as_str() {
            "application/grpc-web" | "application/grpc-web+proto" => Some(false),
            "application/grpc-web-text" | "application/grpc-web-text+proto" => Some(true),
            _ => None,
        }
    }
    let request_text = grpc_web(headers.get(header::CONTENT_TYPE)?.to_str().ok()?)?;
    let asked = headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .find_map(grpc_web);
    Some(asked.unwrap_or(request_text))
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

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(content_type: &str, accept: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::CONTENT_TYPE, content_type.parse().unwrap());
        for a in accept {
            h.append(header::ACCEPT, a.parse().unwrap());
        }
        h
    }

    #[test]
    fn the_answer_uses_the_request_encoding_unless_accept_asks_otherwise() {
        let text = "application/grpc-web-text";
        let binary = "application/grpc-web+proto";
        assert_eq!(answer_as_text(&headers(text, &[])), Some(true));
        assert_eq!(answer_as_text(&headers(text, &["*/*"])), Some(true));
        assert_eq!(answer_as_text(&headers(text, &[binary])), Some(false));
        assert_eq!(
            answer_as_text(&headers(text, &["text/plain, application/grpc-web; q=0.9"])),
            Some(false)
        );
        assert_eq!(
            answer_as_text(&headers("application/grpc-web-text+proto", &[])),
            Some(true)
        );
        assert_eq!(answer_as_text(&headers(binary, &[])), Some(false));
        assert_eq!(
            answer_as_text(&headers("application/grpc-web", &[])),
            Some(false)
        );
        assert_eq!(answer_as_text(&headers(binary, &[text])), Some(true));
        assert_eq!(answer_as_text(&headers("application/grpc", &[])), None);
        assert_eq!(answer_as_text(&headers("application/json", &[text])), None);
    }
}
